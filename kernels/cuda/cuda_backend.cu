// The CUDA Backend (docs/ARCHITECTURE.md §3): one stream per backend; cuBLAS for GEMM (row-major through the
// transpose identity), cuDNN for convolutions (our NHWC activations transposed to NCHW around each
// call, where cuDNN's fast fp32 kernels are; algorithms chosen once per geometry and cached), our
// kernels (cuda_kernels.cu) for the rest. Ops only enqueue work; the
// only allocations after construction are the scratch buffer growing on the first use of a larger
// shape and the temporary workspace of a cuDNN algorithm search.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "engine/errors.h"
#include "engine/optimizer_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.cuh"

namespace tandem {

// ---- errors -----------------------------------------------------------------------------------

namespace cuda_detail {

namespace {
std::string where(const char* call, const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": " + call;
}
}  // namespace

std::string cuda_hint(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation:
      return "the GPU is out of memory: use a smaller --batch-size, or free the GPU (nvidia-smi shows who uses it)";
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice: return "no usable GPU/driver on this machine: use --device cpu";
    case cudaErrorInvalidDevice: return "choose an existing GPU (nvidia-smi -L lists them), or use --device cpu";
    case cudaErrorIllegalAddress:
    case cudaErrorMisalignedAddress:
    case cudaErrorLaunchFailure:
      return "a kernel accessed invalid memory: this is a Tandem bug; rerun under compute-sanitizer and report it";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return "this binary was not built for this GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=<your sm> "
             "(90 for H100/H200)";
    case cudaErrorDevicesUnavailable: return "the GPU is busy or in exclusive-process mode: check nvidia-smi";
    default: return "check nvidia-smi and the driver; rerun with CUDA_LAUNCH_BLOCKING=1 to locate the failing call";
  }
}

void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  throw Error(
      ErrorKind::Device,
      "CUDA error at " + where(call, file, line) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")",
      cuda_hint(e));
}

void warn_cuda(cudaError_t e, const char* call, const char* file, int line) {
  std::fprintf(stderr, "tandem: warning: CUDA error at %s: %s (%s)\n", where(call, file, line).c_str(),
               cudaGetErrorName(e), cudaGetErrorString(e));
}

void throw_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  std::string hint =
      s == CUBLAS_STATUS_ALLOC_FAILED ? "the GPU is out of memory: use a smaller --batch-size"
      : s == CUBLAS_STATUS_NOT_INITIALIZED
          ? "cuBLAS could not start: check the driver (nvidia-smi) and that libcublas matches the toolkit"
          : "this is likely a Tandem bug (bad GEMM arguments); please report it";
  throw Error(ErrorKind::Device,
              "cuBLAS error at " + where(call, file, line) + ": " + cublasGetStatusName(s) + " (" +
                  cublasGetStatusString(s) + ")",
              hint);
}

#if TANDEM_CUDA_USE_CUDNN
void throw_cudnn(cudnnStatus_t s, const char* call, const char* file, int line) {
  std::string hint = s == CUDNN_STATUS_ALLOC_FAILED ? "the GPU is out of memory: use a smaller --batch-size"
                     : s == CUDNN_STATUS_NOT_INITIALIZED
                         ? "cuDNN could not start: check that libcudnn 9 is found (CUDNN_ROOT, LD_LIBRARY_PATH)"
                         : "check that the cuDNN library matches the headers Tandem was built with";
  throw Error(ErrorKind::Device, "cuDNN error at " + where(call, file, line) + ": " + cudnnGetErrorString(s), hint);
}
#endif

}  // namespace cuda_detail

// ---- device discovery ---------------------------------------------------------------------------

namespace {

// Number of GPUs and, when there are none, why.
int probe_devices(std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky, but leave no error behind
    if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    return 0;
  }
  if (count <= 0 && why) *why = "the CUDA runtime reports 0 devices";
  return std::max(count, 0);
}

}  // namespace

int cuda_device_count() { return probe_devices(nullptr); }

GpuPrecision parse_gpu_precision(const std::string& text) {
  if (text == "fp32") return GpuPrecision::Fp32;
  if (text == "tf32") return GpuPrecision::Tf32;
  throw_invalid("unknown GPU precision '" + text + "'", "use fp32 (exact, the default) or tf32 (tensor cores)");
}

const char* gpu_precision_name(GpuPrecision p) { return p == GpuPrecision::Tf32 ? "tf32" : "fp32"; }

std::string cuda_device_description(int device_index) {
  cudaDeviceProp prop;
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  int driver = 0;
  TANDEM_CUDA_CHECK(cudaDriverGetVersion(&driver));
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f", double(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " + mem +
         " GiB, " + std::to_string(prop.multiProcessorCount) + " SMs, driver " + std::to_string(driver / 1000) + "." +
         std::to_string((driver % 1000) / 10);
}

// ---- the backend --------------------------------------------------------------------------------

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

constexpr size_t kStageBytes = size_t(1) << 20;  // uploads up to this size go through pinned staging
constexpr int kStages = 4;
constexpr size_t kCublasWorkspace = size_t(32) << 20;     // recommended for Hopper
constexpr size_t kIm2colBudgetFloats = size_t(32) << 20;  // 128 MiB of columns per chunk

bool verbose() {
  static const bool v = [] {
    const char* e = std::getenv("TANDEM_CUDA_VERBOSE");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return v;
}

// Convolution experiments (TANDEM_CUDA_VERBOSE shows what each shape chose):
//   TANDEM_CUDNN_LAYOUT=nchw|nhwc  the layout cuDNN sees; with nchw, activations are transposed
//                                  around each call (cuDNN's fastest fp32 kernels are NCHW ones)
//   TANDEM_CUDNN_DETERMINISTIC=0   also accept nondeterministic algorithms (run-to-run differences)
//   TANDEM_CUDNN_SEARCH=heuristic  take cuDNN's heuristic ranking instead of timing the candidates
//                                  (cudnnFind*): the same algorithms in every run, so two runs with
//                                  the same seed give the same bits; timing can pick differently
//   TANDEM_CUDA_FUSE=0             run a Conv2D layer's bias, ReLU and their gradients as separate
//                                  kernels instead of inside the layout transposes
// True when `name` is set to `other`, false when unset or set to `usual`; anything else is an
// error naming the variable (checked when a backend is made, see check_conv_settings).
bool env_choice(const char* name, const char* usual, const char* other) {
  const char* e = std::getenv(name);
  if (!e || !*e || std::strcmp(e, usual) == 0) return false;
  if (std::strcmp(e, other) == 0) return true;
  throw_invalid(std::string(name) + "='" + e + "' is not a known setting",
                std::string("use ") + usual + " (the default) or " + other + ", or unset it");
}
bool conv_nchw() {
  static const bool v = !env_choice("TANDEM_CUDNN_LAYOUT", "nchw", "nhwc");
  return v;
}
bool conv_deterministic_only() {
  static const bool v = !env_choice("TANDEM_CUDNN_DETERMINISTIC", "1", "0");
  return v;
}
bool conv_timed_search() {
  static const bool v = !env_choice("TANDEM_CUDNN_SEARCH", "timed", "heuristic");
  return v;
}
bool conv_fused() {
  static const bool v = !env_choice("TANDEM_CUDA_FUSE", "1", "0");
  return v;
}
void check_conv_settings() { (void)(conv_nchw() + conv_deterministic_only() + conv_timed_search() + conv_fused()); }

using ConvKey = std::array<int, 13>;
ConvKey conv_key(const ConvGeometry& g) {
  return {g.n, g.h, g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left, g.oh, g.ow};
}

enum class AlgoState { Unsearched, Cudnn, Im2col };

struct AlgoChoice {
  AlgoState state = AlgoState::Unsearched;
  int algo = 0;
  size_t workspace = 0;
  float ms = 0;  // its time in the search
#if TANDEM_CUDA_USE_CUDNN
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
#endif
};

struct ConvPlan {
  bool cudnn = false;   // false: the im2col path for every direction
  bool padded = false;  // input zero-padded explicitly to (hp, wp) (asymmetric "same" padding)
  bool nchw = false;    // cuDNN sees NCHW tensors and a KCRS filter (transposed around each call)
  int hp = 0, wp = 0;
#if TANDEM_CUDA_USE_CUDNN
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
#endif
  AlgoChoice fwd, bwd_data, bwd_filter;
};

// Scratch layout of a cuDNN convolution: [filter in KRSC or KCRS | padded input or input gradient |
// workspace]; with plan.nchw also [input (or its gradient) in NCHW | output (or its gradient) in
// NCHW] before the workspace.
struct ConvScratch {
  size_t filter_off = 0, padded_off = 0, in_nchw_off = 0, out_nchw_off = 0, workspace_off = 0, total = 0;
};

}  // namespace

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaBackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  Device device() const override { return Device{DeviceKind::Gpu, device_}; }
  void set_precision(GpuPrecision p);
  cudaStream_t stream() const { return stream_; }

  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void upload(void* dst, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(float* x, size_t n, float value) override;
  void synchronize() override;
  bool begin_step_graph(uint64_t key) override;
  void end_step_graph() override;
  StepGraphCounts step_graph_counts() const override { return graph_counts_; }
  void abandon_step_graph() noexcept override;
  void drop_step_graphs() noexcept override;
  // Batch invariance: cuDNN's heuristic ranking instead of a timed search, which can choose
  // differently from one process to the next (cuBLAS and our kernels give fixed bits per shape).
  void set_batch_invariant(bool on) override { heuristic_search_ = on; }

  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
            float beta, float* c, int ldc) override;
  void bias_add(float* y, const float* bias, int64_t rows, int cols) override;
  void bias_grad(const float* dy, float* db, int64_t rows, int cols) override;
  void relu_forward(const float* x, float* y, size_t n) override;
  void relu_backward(const float* y, const float* dy, float* dx, size_t n) override;
  void add(float* y, const float* x, size_t n) override;
  void scale(float* x, size_t n, float s) override;

  void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) override;
  void conv2d_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) override;
  void conv2d_backward_filter(const ConvGeometry& g, const float* x, const float* dy, float* dw) override;
  void conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu,
                                float* y) override;
  void conv2d_bias_relu_backward(const ConvGeometry& g, const float* x, const float* y, float* dy, const float* w,
                                 bool relu, float* dw, float* db, float* dx) override;
  void maxpool_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax) override;
  void maxpool_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) override;

  void dropout_forward(const DropoutParams& p, const float* x, float* y, float* mask) override;
  void multiply(const float* a, const float* b, float* y, size_t n) override;
  void batchnorm_forward_train(const BatchNormParams& p, const float* x, const float* gamma, const float* beta,
                               float* moving_mean, float* moving_var, float* y, float* save_mean,
                               float* save_inv_std) override;
  void batchnorm_forward_infer(const BatchNormParams& p, const float* x, const float* gamma, const float* beta,
                               const float* moving_mean, const float* moving_var, float* y) override;
  void batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                          const float* save_mean, const float* save_inv_std, float* dx, float* dgamma,
                          float* dbeta) override;

  void softmax(const float* logits, float* probs, int64_t rows, int cols) override;
  void softmax_cross_entropy(const float* logits, const int32_t* labels, const float* onehot, int64_t rows, int cols,
                             float grad_scale, float* dlogits, double* metrics) override;
  void gather_batch(const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                    int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot) override;
  void sgd_update(const SgdParams& p, float* w, const float* g, float* velocity, size_t n) override;
  void adam_update(const AdamParams& p, float* w, const float* g, float* m, float* v, size_t n) override;

 private:
  void bind() const { TANDEM_CUDA_CHECK(cudaSetDevice(device_)); }
  // The scratch buffer, grown (never shrunk) to at least `bytes`. Its contents do not survive a
  // call that grows it.
  void* scratch(size_t bytes);
  [[noreturn]] void throw_oom(size_t bytes, const char* what);

  ConvPlan& conv_plan(const ConvGeometry& g);
  void destroy_plans();
  // Forward with an optional bias and ReLU (fused into the NCHW -> NHWC transpose on that path).
  void conv_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu, float* y);
  // im2col + cuBLAS path (no cuDNN, or a geometry/algorithm cuDNN cannot serve).
  int im2col_chunk(const ConvGeometry& g) const;
  void conv_forward_im2col(const ConvGeometry& g, const float* x, const float* w, float* y);
  void conv_backward_data_im2col(const ConvGeometry& g, const float* dy, const float* w, float* dx);
  void conv_backward_filter_im2col(const ConvGeometry& g, const float* x, const float* dy, float* dw);
#if TANDEM_CUDA_USE_CUDNN
  struct FusedBackwardLayout {
    const ConvPlan* plan = nullptr;
    ConvScratch cs;  // its workspace fits both backward algorithms
    size_t total = 0;  // cs plus the bias sum's partials
  };
  bool fused_backward_layout(const ConvGeometry& g, bool want_db, bool want_dx, FusedBackwardLayout* out);
  bool conv_backward_fused(const ConvGeometry& g, const float* x, const float* y, const float* dy, const float* w,
                           bool relu, float* dw, float* db, float* dx);
  void search_forward(ConvPlan& plan, const ConvGeometry& g, const float* x, const float* w, float* y);
  void search_backward_data(ConvPlan& plan, const ConvGeometry& g, const float* dy, const float* w, float* dx);
  void search_backward_filter(ConvPlan& plan, const ConvGeometry& g, const float* x, const float* dy, float* dw);
  void* find_workspace(size_t want, size_t* got);
  void prepare_filter(const ConvPlan& plan, const ConvGeometry& g, const float* w, float* wt);
  cudnnMathType_t search_math() const {
    return precision_ == GpuPrecision::Tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  }
#endif

  int device_;
  GpuPrecision precision_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
#if TANDEM_CUDA_USE_CUDNN
  cudnnHandle_t cudnn_ = nullptr;
#endif
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  bool heuristic_search_ = false;  // set_batch_invariant
  struct Stage {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::array<Stage, kStages> stages_{};
  int next_stage_ = 0;
  std::map<ConvKey, ConvPlan> plans_;

  // CUDA Graphs: one captured step per key. While a step is recorded, per-step values go to a
  // pinned record block at a cursor that advances identically in every step of the key; the
  // capture holds copies from there (uploads straight to their destination, kernel scalars to the
  // device mirror of the block, where the kernels read them), so a replay sees the new values.
  enum class GraphMode { Eager, Capture, Replay };
  struct StepGraph {
    cudaGraphExec_t exec = nullptr;
    size_t recorded = 0;  // bytes of the record block one step uses
    int seen = 0;
    bool failed = false;
  };
  StepGraphCounts graph_counts_;
  static constexpr size_t kRecordBytes = size_t(4) << 20;
  bool replaying() const { return mode_ == GraphMode::Replay; }
  bool recording() const { return mode_ != GraphMode::Eager; }
  // Puts `bytes` of this step's data in the record block; a capture copies them from there to
  // `dst`, by default the block's device mirror. Returns where they land on the device.
  const void* record(const void* src, size_t bytes, void* dst = nullptr);
  void destroy_graphs();
  GraphMode mode_ = GraphMode::Eager;
  std::map<uint64_t, StepGraph> graphs_;
  StepGraph* current_ = nullptr;
  char* record_host_ = nullptr;
  char* record_dev_ = nullptr;
  size_t record_cursor_ = 0;
  cudaEvent_t graph_done_ = nullptr;
  bool graph_launched_ = false;
};

CudaBackend::CudaBackend(int device, const CudaBackendOptions& options)
    : device_(device), precision_(options.precision) {
  check_conv_settings();
  bind();
  TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TANDEM_CUBLAS_CHECK(cublasCreate(&cublas_));
  TANDEM_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  TANDEM_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspace));
  TANDEM_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspace));
  TANDEM_CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
#if TANDEM_CUDA_USE_CUDNN
  TANDEM_CUDNN_CHECK(cudnnCreate(&cudnn_));
  TANDEM_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
#endif
  for (Stage& s : stages_) {
    TANDEM_CUDA_CHECK(cudaHostAlloc(&s.host, kStageBytes, cudaHostAllocDefault));
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  }
  set_precision(precision_);
  if (verbose())
    std::fprintf(stderr, "tandem: cuda backend on gpu:%d (%s), precision %s, cuDNN %s\n", device_,
                 cuda_device_description(device_).c_str(), gpu_precision_name(precision_),
                 TANDEM_CUDA_USE_CUDNN ? "on" : "off (im2col)");
}

CudaBackend::~CudaBackend() {
  TANDEM_CUDA_WARN(cudaSetDevice(device_));
  abandon_step_graph();
  if (stream_) TANDEM_CUDA_WARN(cudaStreamSynchronize(stream_));
  destroy_plans();
  destroy_graphs();
  if (graph_done_) TANDEM_CUDA_WARN(cudaEventDestroy(graph_done_));
  if (record_host_) TANDEM_CUDA_WARN(cudaFreeHost(record_host_));
  if (record_dev_) TANDEM_CUDA_WARN(cudaFree(record_dev_));
  for (Stage& s : stages_) {
    if (s.done) TANDEM_CUDA_WARN(cudaEventDestroy(s.done));
    if (s.host) TANDEM_CUDA_WARN(cudaFreeHost(s.host));
  }
  if (scratch_) TANDEM_CUDA_WARN(cudaFree(scratch_));
#if TANDEM_CUDA_USE_CUDNN
  if (cudnn_) cudnnDestroy(cudnn_);
#endif
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_workspace_) TANDEM_CUDA_WARN(cudaFree(cublas_workspace_));
  if (stream_) TANDEM_CUDA_WARN(cudaStreamDestroy(stream_));
}

void CudaBackend::set_precision(GpuPrecision p) {
  bind();
  if (recording()) throw_invalid("cannot change the GPU precision inside a training step");
  if (p != precision_) {
    TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    destroy_plans();   // algorithms are chosen per math mode
    destroy_graphs();  // captured with the old math mode
  }
  precision_ = p;
  TANDEM_CUBLAS_CHECK(
      cublasSetMathMode(cublas_, p == GpuPrecision::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

void CudaBackend::throw_oom(size_t bytes, const char* what) {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
  char buf[256];
  std::snprintf(buf, sizeof(buf), "out of GPU memory on gpu:%d allocating %.1f MiB for %s (%.1f MiB free of %.1f MiB)",
                device_, double(bytes) / 1048576.0, what, double(free_b) / 1048576.0, double(total_b) / 1048576.0);
  throw Error(ErrorKind::Device, buf, "use a smaller --batch-size (or a smaller model), or free the GPU");
}

// ---- memory -------------------------------------------------------------------------------------

void* CudaBackend::allocate(size_t bytes) {
  bind();
  if (bytes == 0) bytes = kAlign;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw_oom(bytes, "a tensor");
  }
  if (e != cudaSuccess) cuda_detail::throw_cuda(e, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
  return p;
}

void CudaBackend::deallocate(void* p) {
  // Called from destructors: reports failures instead of throwing.
  if (!p) return;
  TANDEM_CUDA_WARN(cudaSetDevice(device_));
  TANDEM_CUDA_WARN(cudaStreamSynchronize(stream_));
  TANDEM_CUDA_WARN(cudaFree(p));
}

void* CudaBackend::scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  bytes = std::max(align_up(bytes), scratch_bytes_ + scratch_bytes_ / 2);
  if (scratch_) {
    TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    TANDEM_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
  }
  cudaError_t e = cudaMalloc(&scratch_, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    scratch_ = nullptr;
    throw_oom(bytes, "kernel scratch / cuDNN workspace");
  }
  if (e != cudaSuccess) cuda_detail::throw_cuda(e, "cudaMalloc(&scratch_, bytes)", __FILE__, __LINE__);
  scratch_bytes_ = bytes;
  return scratch_;
}

void CudaBackend::upload(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  bind();
  if (recording()) {  // a graph step: the capture copies the bytes from the record block
    record(src, bytes, dst);
    return;
  }
  if (bytes <= kStageBytes) {
    // Small uploads (batch indices, metrics resets) are copied into pinned staging so that the
    // caller's buffer is free on return and the copy stays asynchronous.
    Stage& s = stages_[next_stage_];
    next_stage_ = (next_stage_ + 1) % kStages;
    TANDEM_CUDA_CHECK(cudaEventSynchronize(s.done));
    std::memcpy(s.host, src, bytes);
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream_));
    TANDEM_CUDA_CHECK(cudaEventRecord(s.done, stream_));
    return;
  }
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::download(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  bind();
  if (recording()) throw Error(ErrorKind::Internal, "a download inside a CUDA graph step", "train with --cuda-graphs off");
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (!bytes || dst == src) return;
  bind();
  if (replaying()) return;
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  if (d + bytes <= s || s + bytes <= d) {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  // Overlapping ranges (memmove semantics): copy in non-overlapping pieces in a safe order.
  const size_t step = static_cast<size_t>(d > s ? d - s : s - d);
  if (d < s) {
    for (size_t off = 0; off < bytes; off += step)
      TANDEM_CUDA_CHECK(
          cudaMemcpyAsync(d + off, s + off, std::min(step, bytes - off), cudaMemcpyDeviceToDevice, stream_));
  } else {
    for (size_t end = bytes; end > 0;) {
      size_t len = std::min(step, end);
      end -= len;
      TANDEM_CUDA_CHECK(cudaMemcpyAsync(d + end, s + end, len, cudaMemcpyDeviceToDevice, stream_));
    }
  }
}

void CudaBackend::fill(float* x, size_t n, float value) {
  bind();
  if (replaying()) return;
  cuda_kernels::fill(stream_, x, n, value);
}

void CudaBackend::synchronize() {
  bind();
  if (recording()) throw Error(ErrorKind::Internal, "a synchronize inside a CUDA graph step", "train with --cuda-graphs off");
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- dense algebra ------------------------------------------------------------------------------

void CudaBackend::gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                       int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  bind();
  if (replaying()) return;
  if (k <= 0) {
    cuda_kernels::scale_matrix(stream_, c, m, n, ldc, beta);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  TANDEM_CUBLAS_CHECK(cublasSgemm(cublas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                  &alpha, b, ldb, a, lda, &beta, c, ldc));
}

void CudaBackend::bias_add(float* y, const float* bias, int64_t rows, int cols) {
  bind();
  if (replaying()) return;
  cuda_kernels::bias_add(stream_, y, bias, rows, cols);
}

void CudaBackend::bias_grad(const float* dy, float* db, int64_t rows, int cols) {
  if (cols <= 0) return;
  bind();
  if (replaying()) return;
  void* s = scratch(cuda_kernels::column_reduce_scratch_bytes(rows, cols, 1));
  cuda_kernels::bias_grad(stream_, dy, db, rows, cols, s);
}

void CudaBackend::relu_forward(const float* x, float* y, size_t n) {
  bind();
  if (replaying()) return;
  cuda_kernels::relu_forward(stream_, x, y, n);
}
void CudaBackend::relu_backward(const float* y, const float* dy, float* dx, size_t n) {
  bind();
  if (replaying()) return;
  cuda_kernels::relu_backward(stream_, y, dy, dx, n);
}
void CudaBackend::add(float* y, const float* x, size_t n) {
  bind();
  if (replaying()) return;
  cuda_kernels::add(stream_, y, x, n);
}
void CudaBackend::scale(float* x, size_t n, float s) {
  bind();
  if (replaying()) return;
  cuda_kernels::scale(stream_, x, n, s);
}
void CudaBackend::multiply(const float* a, const float* b, float* y, size_t n) {
  bind();
  if (replaying()) return;
  cuda_kernels::multiply(stream_, a, b, y, n);
}

// ---- convolution --------------------------------------------------------------------------------

void CudaBackend::destroy_plans() {
#if TANDEM_CUDA_USE_CUDNN
  for (auto& kv : plans_) {
    ConvPlan& p = kv.second;
    if (p.xd) cudnnDestroyTensorDescriptor(p.xd);
    if (p.yd) cudnnDestroyTensorDescriptor(p.yd);
    if (p.wd) cudnnDestroyFilterDescriptor(p.wd);
    if (p.cd) cudnnDestroyConvolutionDescriptor(p.cd);
  }
#endif
  plans_.clear();
}

ConvPlan& CudaBackend::conv_plan(const ConvGeometry& g) {
  ConvKey key = conv_key(g);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  ConvPlan& plan = plans_[key];
#if TANDEM_CUDA_USE_CUDNN
  TANDEM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.xd));
  TANDEM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.yd));
  TANDEM_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan.wd));
  TANDEM_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan.cd));
  // Geometries cuDNN refuses (descriptor errors) take the im2col path instead of failing.
  plan.nchw = conv_nchw();
  const cudnnTensorFormat_t format = plan.nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
  const bool described = cudnnSetFilter4dDescriptor(plan.wd, CUDNN_DATA_FLOAT, format, g.k, g.c, g.kh, g.kw) ==
                             CUDNN_STATUS_SUCCESS &&
                         cudnnSetTensor4dDescriptor(plan.yd, format, CUDNN_DATA_FLOAT, g.n, g.k, g.oh, g.ow) ==
                             CUDNN_STATUS_SUCCESS;
  // cuDNN pads symmetrically. TensorFlow's "same" padding puts the odd extra row/column at the
  // end; when that changes the output size the input is zero-padded explicitly instead.
  auto try_geometry = [&](int h, int w, int pt, int pl) {
    if (cudnnSetTensor4dDescriptor(plan.xd, format, CUDNN_DATA_FLOAT, g.n, g.c, h, w) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnSetConvolution2dDescriptor(plan.cd, pt, pl, g.sh, g.sw, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) !=
            CUDNN_STATUS_SUCCESS)
      return false;
    int on = 0, oc = 0, oh = 0, ow = 0;
    if (cudnnGetConvolution2dForwardOutputDim(plan.cd, plan.xd, plan.wd, &on, &oc, &oh, &ow) != CUDNN_STATUS_SUCCESS)
      return false;
    return on == g.n && oc == g.k && oh == g.oh && ow == g.ow;
  };
  if (!described) {
    plan.cudnn = false;
  } else if (try_geometry(g.h, g.w, g.pad_top, g.pad_left)) {
    plan.cudnn = true;
  } else {
    plan.hp = (g.oh - 1) * g.sh + g.kh;
    plan.wp = (g.ow - 1) * g.sw + g.kw;
    plan.padded = true;
    plan.cudnn = plan.hp > 0 && plan.wp > 0 && try_geometry(plan.hp, plan.wp, 0, 0);
  }
#endif
  if (!plan.cudnn) {
    plan.fwd.state = plan.bwd_data.state = plan.bwd_filter.state = AlgoState::Im2col;
  }
  return plan;
}

int CudaBackend::im2col_chunk(const ConvGeometry& g) const {
  size_t per_sample = static_cast<size_t>(g.oh) * g.ow * g.kh * g.kw * g.c;
  size_t chunk = std::max<size_t>(1, kIm2colBudgetFloats / std::max<size_t>(1, per_sample));
  return static_cast<int>(std::min<size_t>(chunk, static_cast<size_t>(g.n)));
}

void CudaBackend::conv_forward_im2col(const ConvGeometry& g, const float* x, const float* w, float* y) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(false, false, g.n * g.h * g.w, g.k, g.c, 1.f, x, g.c, w, g.k, 0.f, y, g.k);
    return;
  }
  const int chunk = im2col_chunk(g);
  float* col = static_cast<float*>(scratch(sizeof(float) * size_t(chunk) * g.oh * g.ow * kk));
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    cuda_kernels::im2col(stream_, g, x + int64_t(s0) * g.h * g.w * g.c, ns, col);
    gemm(false, false, ns * g.oh * g.ow, g.k, kk, 1.f, col, kk, w, g.k, 0.f, y + int64_t(s0) * g.oh * g.ow * g.k, g.k);
  }
}

void CudaBackend::conv_backward_data_im2col(const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(false, true, g.n * g.h * g.w, g.c, g.k, 1.f, dy, g.k, w, g.k, 0.f, dx, g.c);
    return;
  }
  const int chunk = im2col_chunk(g);
  float* col = static_cast<float*>(scratch(sizeof(float) * size_t(chunk) * g.oh * g.ow * kk));
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    gemm(false, true, ns * g.oh * g.ow, kk, g.k, 1.f, dy + int64_t(s0) * g.oh * g.ow * g.k, g.k, w, g.k, 0.f, col, kk);
    cuda_kernels::col2im(stream_, g, col, ns, dx + int64_t(s0) * g.h * g.w * g.c);
  }
}

void CudaBackend::conv_backward_filter_im2col(const ConvGeometry& g, const float* x, const float* dy, float* dw) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(true, false, g.c, g.k, g.n * g.h * g.w, 1.f, x, g.c, dy, g.k, 0.f, dw, g.k);
    return;
  }
  const int chunk = im2col_chunk(g);
  float* col = static_cast<float*>(scratch(sizeof(float) * size_t(chunk) * g.oh * g.ow * kk));
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    cuda_kernels::im2col(stream_, g, x + int64_t(s0) * g.h * g.w * g.c, ns, col);
    gemm(true, false, kk, g.k, ns * g.oh * g.ow, 1.f, col, kk, dy + int64_t(s0) * g.oh * g.ow * g.k, g.k,
         s0 == 0 ? 0.f : 1.f, dw, g.k);
  }
}

#if TANDEM_CUDA_USE_CUDNN

namespace {

constexpr size_t kFindWorkspaceCap = size_t(512) << 20;

// Picks the fastest successful deterministic algorithm that fits the workspace (any successful
// one if no deterministic one exists). perf is sorted by time, as cudnnFind* returns it.
template <class Perf>
bool choose_algo(const Perf* perf, int count, size_t workspace_limit, AlgoChoice* out) {
  for (int pass = 0; pass < 2; ++pass)
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > workspace_limit) continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC && conv_deterministic_only()) continue;
      out->state = AlgoState::Cudnn;
      out->algo = static_cast<int>(p.algo);
      out->workspace = p.memory;
      out->ms = p.time;
      out->math = p.mathType;
      return true;
    }
  return false;
}

template <class Perf>
size_t max_workspace(const Perf* perf, int count) {
  size_t m = 0;
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS) m = std::max(m, perf[i].memory);
  return std::min(m, kFindWorkspaceCap);
}

// Verbose mode logs every choice; a fallback to im2col (no usable cuDNN algorithm) is always noted.
void report_choice(const char* what, const ConvGeometry& g, const AlgoChoice& c, float ms) {
  if (!verbose() && c.state != AlgoState::Im2col) return;
  std::fprintf(stderr,
               "tandem: conv %s n=%d %dx%dx%d k=%dx%dx%d s=%dx%d pad=%d,%d -> %s %s algo %d ws %.1f MiB (%.3f ms; "
               "fastest of all %.3f ms)\n",
               what, g.n, g.h, g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left,
               c.state == AlgoState::Cudnn ? "cudnn" : "im2col", conv_nchw() ? "nchw" : "nhwc", c.algo,
               double(c.workspace) / 1048576.0, double(c.ms), double(ms));
}

// With TANDEM_CUDNN_SEARCH=heuristic: the choice from cuDNN's heuristic ranking (no timing), if
// it gave one.
template <class Perf>
bool take_heuristic(bool timed, const Perf* perf, int returned, const char* what, const ConvGeometry& g,
                    AlgoChoice* out) {
  if (timed || returned <= 0) return false;
  if (!choose_algo(perf, returned, kFindWorkspaceCap, out)) out->state = AlgoState::Im2col;
  report_choice(what, g, *out, 0.f);
  return true;
}

}  // namespace

// A temporary workspace for an algorithm search, as large as the candidates want (capped), or
// smaller when memory is short. Freed by the caller.
void* CudaBackend::find_workspace(size_t want, size_t* got) {
  *got = 0;
  while (want > 0) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, want);
    if (e == cudaSuccess) {
      *got = want;
      return p;
    }
    (void)cudaGetLastError();
    if (e != cudaErrorMemoryAllocation) cuda_detail::throw_cuda(e, "cudaMalloc(&p, want)", __FILE__, __LINE__);
    want /= 2;
    if (want < (size_t(1) << 20)) break;
  }
  return nullptr;
}

void CudaBackend::search_forward(ConvPlan& plan, const ConvGeometry& g, const float* x, const float* w, float* y) {
  TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, search_math()));
  int max_count = 0;
  TANDEM_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn_, &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_count, 1));
  int returned = 0;
  if (cudnnGetConvolutionForwardAlgorithm_v7(cudnn_, plan.xd, plan.wd, plan.cd, plan.yd, max_count, &returned,
                                             perf.data()) != CUDNN_STATUS_SUCCESS)
    returned = 0;  // no heuristics: search with no workspace
  if (take_heuristic(conv_timed_search() && !heuristic_search_, perf.data(), returned, "forward", g, &plan.fwd)) return;
  size_t ws_size = 0;
  void* ws = find_workspace(max_workspace(perf.data(), returned), &ws_size);
  cudnnStatus_t st = cudnnFindConvolutionForwardAlgorithmEx(cudnn_, plan.xd, x, plan.wd, w, plan.cd, plan.yd, y,
                                                            max_count, &returned, perf.data(), ws, ws_size);
  if (ws) TANDEM_CUDA_CHECK(cudaFree(ws));
  if (st != CUDNN_STATUS_SUCCESS || !choose_algo(perf.data(), returned, ws_size, &plan.fwd))
    plan.fwd.state = AlgoState::Im2col;
  report_choice("forward", g, plan.fwd, returned > 0 ? perf[0].time : 0.f);
}

void CudaBackend::search_backward_data(ConvPlan& plan, const ConvGeometry& g, const float* dy, const float* w,
                                       float* dx) {
  TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, search_math()));
  int max_count = 0;
  TANDEM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnn_, &max_count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max_count, 1));
  int returned = 0;
  if (cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_, plan.wd, plan.yd, plan.cd, plan.xd, max_count, &returned,
                                                  perf.data()) != CUDNN_STATUS_SUCCESS)
    returned = 0;  // no heuristics: search with no workspace
  if (take_heuristic(conv_timed_search() && !heuristic_search_, perf.data(), returned, "backward-data", g, &plan.bwd_data)) return;
  size_t ws_size = 0;
  void* ws = find_workspace(max_workspace(perf.data(), returned), &ws_size);
  cudnnStatus_t st = cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn_, plan.wd, w, plan.yd, dy, plan.cd, plan.xd, dx,
                                                                 max_count, &returned, perf.data(), ws, ws_size);
  if (ws) TANDEM_CUDA_CHECK(cudaFree(ws));
  if (st != CUDNN_STATUS_SUCCESS || !choose_algo(perf.data(), returned, ws_size, &plan.bwd_data))
    plan.bwd_data.state = AlgoState::Im2col;
  report_choice("backward-data", g, plan.bwd_data, returned > 0 ? perf[0].time : 0.f);
}

void CudaBackend::search_backward_filter(ConvPlan& plan, const ConvGeometry& g, const float* x, const float* dy,
                                         float* dw) {
  TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, search_math()));
  int max_count = 0;
  TANDEM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnn_, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(max_count, 1));
  int returned = 0;
  if (cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_, plan.xd, plan.yd, plan.cd, plan.wd, max_count, &returned,
                                                    perf.data()) != CUDNN_STATUS_SUCCESS)
    returned = 0;  // no heuristics: search with no workspace
  if (take_heuristic(conv_timed_search() && !heuristic_search_, perf.data(), returned, "backward-filter", g, &plan.bwd_filter)) return;
  size_t ws_size = 0;
  void* ws = find_workspace(max_workspace(perf.data(), returned), &ws_size);
  cudnnStatus_t st = cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn_, plan.xd, x, plan.yd, dy, plan.cd, plan.wd,
                                                                   dw, max_count, &returned, perf.data(), ws, ws_size);
  if (ws) TANDEM_CUDA_CHECK(cudaFree(ws));
  if (st != CUDNN_STATUS_SUCCESS || !choose_algo(perf.data(), returned, ws_size, &plan.bwd_filter))
    plan.bwd_filter.state = AlgoState::Im2col;
  report_choice("backward-filter", g, plan.bwd_filter, returned > 0 ? perf[0].time : 0.f);
}

#endif  // TANDEM_CUDA_USE_CUDNN

#if TANDEM_CUDA_USE_CUDNN
namespace {
// Spatial size of the input cuDNN sees (explicitly padded or not).
int64_t input_plane(const ConvPlan& plan, const ConvGeometry& g) {
  return plan.padded ? int64_t(plan.hp) * plan.wp : int64_t(g.h) * g.w;
}

ConvScratch conv_scratch(const ConvGeometry& g, const ConvPlan& plan, size_t workspace) {
  ConvScratch s;
  s.padded_off = align_up(sizeof(float) * size_t(g.kh) * g.kw * g.c * g.k);
  const size_t in_floats = size_t(g.n) * size_t(input_plane(plan, g)) * g.c;
  s.in_nchw_off = s.padded_off + align_up(plan.padded ? sizeof(float) * in_floats : 0);
  s.out_nchw_off = s.in_nchw_off + align_up(plan.nchw ? sizeof(float) * in_floats : 0);
  s.workspace_off = s.out_nchw_off + align_up(plan.nchw ? sizeof(float) * size_t(g.n) * g.oh * g.ow * g.k : 0);
  s.total = s.workspace_off + align_up(workspace);
  return s;
}
}  // namespace
#endif

#if TANDEM_CUDA_USE_CUDNN
// Our HWIO filter in the layout cuDNN was told: KCRS (NCHW) or KRSC (NHWC).
void CudaBackend::prepare_filter(const ConvPlan& plan, const ConvGeometry& g, const float* w, float* wt) {
  if (plan.nchw)
    cuda_kernels::swap_outer_inner(stream_, w, wt, int64_t(g.kh) * g.kw, g.c, g.k);
  else
    cuda_kernels::transpose(stream_, w, wt, int64_t(g.kh) * g.kw * g.c, g.k);
}
#endif

void CudaBackend::conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) {
  conv_forward(g, x, w, nullptr, false, y);
}

void CudaBackend::conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                                           bool relu, float* y) {
  if (!conv_fused()) return Backend::conv2d_bias_relu_forward(g, x, w, bias, relu, y);
  conv_forward(g, x, w, bias, relu, y);
}

void CudaBackend::conv_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu,
                               float* y) {
  if (g.n <= 0) return;
  bind();
  if (replaying()) return;
  const int64_t rows = int64_t(g.n) * g.oh * g.ow;
  // Bias and ReLU as kernels of their own after the convolution (paths without the transpose).
  auto epilogue = [&] {
    if (bias) cuda_kernels::bias_add(stream_, y, bias, rows, g.k);
    if (relu) cuda_kernels::relu_forward(stream_, y, y, size_t(rows) * g.k);
  };
  ConvPlan& plan = conv_plan(g);
#if TANDEM_CUDA_USE_CUDNN
  if (plan.fwd.state != AlgoState::Im2col) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      // Prepare the inputs in scratch (HWIO -> KRSC filter; padded input), search once, run.
      const bool searching = plan.fwd.state == AlgoState::Unsearched;
      ConvScratch cs = conv_scratch(g, plan, searching ? 0 : plan.fwd.workspace);
      char* base = static_cast<char*>(scratch(cs.total));
      float* wt = reinterpret_cast<float*>(base + cs.filter_off);
      float* xp = reinterpret_cast<float*>(base + cs.padded_off);
      float* xt = reinterpret_cast<float*>(base + cs.in_nchw_off);
      float* yt = reinterpret_cast<float*>(base + cs.out_nchw_off);
      prepare_filter(plan, g, w, wt);
      const float* xin = x;
      if (plan.padded) {
        cuda_kernels::pad_nhwc(stream_, x, g.n, g.h, g.w, g.c, xp, plan.hp, plan.wp, g.pad_top, g.pad_left);
        xin = xp;
      }
      float* yout = y;
      if (plan.nchw) {
        cuda_kernels::transpose_batched(stream_, xin, xt, g.n, input_plane(plan, g), g.c);
        xin = xt;
        yout = yt;
      }
      if (searching) {
        search_forward(plan, g, xin, wt, yout);
        if (plan.fwd.state == AlgoState::Cudnn) continue;  // the scratch may need to grow: prepare again
        break;
      }
      const float one = 1.f, zero = 0.f;
      TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, plan.fwd.math));
      TANDEM_CUDNN_CHECK(cudnnConvolutionForward(cudnn_, &one, plan.xd, xin, plan.wd, wt, plan.cd,
                                                 static_cast<cudnnConvolutionFwdAlgo_t>(plan.fwd.algo),
                                                 base + cs.workspace_off, plan.fwd.workspace, &zero, plan.yd, yout));
      if (plan.nchw)
        cuda_kernels::transpose_batched_bias_relu(stream_, yt, y, g.n, g.k, int64_t(g.oh) * g.ow, bias, relu);
      else
        epilogue();
      return;
    }
  }
#endif
  conv_forward_im2col(g, x, w, y);
  epilogue();
}

void CudaBackend::conv2d_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  if (g.n <= 0) return;
  bind();
  if (replaying()) return;
  ConvPlan& plan = conv_plan(g);
#if TANDEM_CUDA_USE_CUDNN
  if (plan.bwd_data.state != AlgoState::Im2col) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool searching = plan.bwd_data.state == AlgoState::Unsearched;
      ConvScratch cs = conv_scratch(g, plan, searching ? 0 : plan.bwd_data.workspace);
      char* base = static_cast<char*>(scratch(cs.total));
      float* wt = reinterpret_cast<float*>(base + cs.filter_off);
      float* dxp = reinterpret_cast<float*>(base + cs.padded_off);
      float* dxt = reinterpret_cast<float*>(base + cs.in_nchw_off);
      float* dyt = reinterpret_cast<float*>(base + cs.out_nchw_off);
      prepare_filter(plan, g, w, wt);
      float* dxout = plan.padded ? dxp : dx;  // NHWC
      float* dxc = dxout;                     // what cuDNN writes
      const float* dyin = dy;
      if (plan.nchw) {
        cuda_kernels::transpose_batched(stream_, dy, dyt, g.n, int64_t(g.oh) * g.ow, g.k);
        dyin = dyt;
        dxc = dxt;
      }
      if (searching) {
        search_backward_data(plan, g, dyin, wt, dxc);
        if (plan.bwd_data.state == AlgoState::Cudnn) continue;
        break;
      }
      const float one = 1.f, zero = 0.f;
      TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, plan.bwd_data.math));
      TANDEM_CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn_, &one, plan.wd, wt, plan.yd, dyin, plan.cd,
                                                      static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.bwd_data.algo),
                                                      base + cs.workspace_off, plan.bwd_data.workspace, &zero, plan.xd,
                                                      dxc));
      if (plan.nchw) cuda_kernels::transpose_batched(stream_, dxt, dxout, g.n, g.c, input_plane(plan, g));
      if (plan.padded)
        cuda_kernels::crop_nhwc(stream_, dxp, g.n, plan.hp, plan.wp, g.c, dx, g.h, g.w, g.pad_top, g.pad_left);
      return;
    }
  }
#endif
  conv_backward_data_im2col(g, dy, w, dx);
}

void CudaBackend::conv2d_backward_filter(const ConvGeometry& g, const float* x, const float* dy, float* dw) {
  bind();
  if (replaying()) return;
  if (g.n <= 0) {
    cuda_kernels::fill(stream_, dw, size_t(g.kh) * g.kw * g.c * g.k, 0.f);
    return;
  }
  ConvPlan& plan = conv_plan(g);
#if TANDEM_CUDA_USE_CUDNN
  if (plan.bwd_filter.state != AlgoState::Im2col) {
    const int64_t ksize = int64_t(g.kh) * g.kw * g.c;
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool searching = plan.bwd_filter.state == AlgoState::Unsearched;
      ConvScratch cs = conv_scratch(g, plan, searching ? 0 : plan.bwd_filter.workspace);
      char* base = static_cast<char*>(scratch(cs.total));
      float* dwt = reinterpret_cast<float*>(base + cs.filter_off);
      float* xp = reinterpret_cast<float*>(base + cs.padded_off);
      float* xt = reinterpret_cast<float*>(base + cs.in_nchw_off);
      float* dyt = reinterpret_cast<float*>(base + cs.out_nchw_off);
      const float* xin = x;
      if (plan.padded) {
        cuda_kernels::pad_nhwc(stream_, x, g.n, g.h, g.w, g.c, xp, plan.hp, plan.wp, g.pad_top, g.pad_left);
        xin = xp;
      }
      const float* dyin = dy;
      if (plan.nchw) {
        cuda_kernels::transpose_batched(stream_, xin, xt, g.n, input_plane(plan, g), g.c);
        cuda_kernels::transpose_batched(stream_, dy, dyt, g.n, int64_t(g.oh) * g.ow, g.k);
        xin = xt;
        dyin = dyt;
      }
      if (searching) {
        search_backward_filter(plan, g, xin, dyin, dwt);
        if (plan.bwd_filter.state == AlgoState::Cudnn) continue;
        break;
      }
      const float one = 1.f, zero = 0.f;
      TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, plan.bwd_filter.math));
      TANDEM_CUDNN_CHECK(
          cudnnConvolutionBackwardFilter(cudnn_, &one, plan.xd, xin, plan.yd, dyin, plan.cd,
                                         static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.bwd_filter.algo),
                                         base + cs.workspace_off, plan.bwd_filter.workspace, &zero, plan.wd, dwt));
      if (plan.nchw)
        cuda_kernels::swap_outer_inner(stream_, dwt, dw, g.k, g.c, int64_t(g.kh) * g.kw);  // KCRS -> HWIO
      else
        cuda_kernels::transpose(stream_, dwt, dw, g.k, ksize);  // KRSC -> HWIO
      return;
    }
  }
#endif
  conv_backward_filter_im2col(g, x, dy, dw);
}

void CudaBackend::conv2d_bias_relu_backward(const ConvGeometry& g, const float* x, const float* y, float* dy,
                                            const float* w, bool relu, float* dw, float* db, float* dx) {
#if TANDEM_CUDA_USE_CUDNN
  if (conv_fused() && g.n > 0) {
    bind();
    if (replaying()) return;
    if (conv_backward_fused(g, x, y, dy, w, relu, dw, db, dx)) return;
    // The separate calls below search this shape's algorithms; the scratch then grows to what the
    // fused path will need, here, in an eager step: growing it synchronises the stream, which a
    // CUDA graph capture (the next step) cannot do.
    Backend::conv2d_bias_relu_backward(g, x, y, dy, w, relu, dw, db, dx);
    FusedBackwardLayout layout;
    if (fused_backward_layout(g, db != nullptr, dx != nullptr, &layout)) scratch(layout.total);
    return;
  }
#endif
  Backend::conv2d_bias_relu_backward(g, x, y, dy, w, relu, dw, db, dx);
}

#if TANDEM_CUDA_USE_CUDNN
// conv_backward_fused's plan and scratch layout for this shape: false where that path does not
// apply (no cuDNN, NHWC, or an algorithm not chosen yet).
bool CudaBackend::fused_backward_layout(const ConvGeometry& g, bool want_db, bool want_dx,
                                        FusedBackwardLayout* out) {
  ConvPlan& plan = conv_plan(g);
  if (!plan.cudnn || !plan.nchw || plan.bwd_filter.state != AlgoState::Cudnn ||
      (want_dx && plan.bwd_data.state != AlgoState::Cudnn))
    return false;
  out->plan = &plan;
  out->cs = conv_scratch(g, plan, std::max(plan.bwd_filter.workspace, want_dx ? plan.bwd_data.workspace : size_t(0)));
  out->total = out->cs.total +
               align_up(want_db ? cuda_kernels::channel_sum_scratch_bytes(g.n, g.k, int64_t(g.oh) * g.ow) : 0);
  return true;
}

// The NCHW cuDNN path of a Conv2D layer's backward, once both algorithms are chosen (the first
// step of a shape takes the separate calls, which search): ReLU's gradient is applied while dy is
// transposed to NCHW, that one NCHW gradient feeds the bias sum, backward-data and backward-filter
// (the separate calls transpose dy twice). Returns false where this path does not apply.
bool CudaBackend::conv_backward_fused(const ConvGeometry& g, const float* x, const float* y, const float* dy,
                                      const float* w, bool relu, float* dw, float* db, float* dx) {
  FusedBackwardLayout layout;
  if (!fused_backward_layout(g, db != nullptr, dx != nullptr, &layout)) return false;
  const ConvPlan& plan = *layout.plan;
  const ConvScratch& cs = layout.cs;
  const int64_t plane = int64_t(g.oh) * g.ow;
  const size_t partial_off = cs.total;
  char* base = static_cast<char*>(scratch(layout.total));
  float* wt = reinterpret_cast<float*>(base + cs.filter_off);  // the filter, then its gradient
  float* padded = reinterpret_cast<float*>(base + cs.padded_off);
  float* in_t = reinterpret_cast<float*>(base + cs.in_nchw_off);  // dx, then x, in NCHW
  float* gt = reinterpret_cast<float*>(base + cs.out_nchw_off);   // the masked gradient in NCHW
  void* ws = base + cs.workspace_off;
  const float one = 1.f, zero = 0.f;

  if (relu)
    cuda_kernels::transpose_batched_relu_grad(stream_, dy, y, gt, g.n, plane, g.k);
  else
    cuda_kernels::transpose_batched(stream_, dy, gt, g.n, plane, g.k);
  if (db) cuda_kernels::channel_sum_nchw(stream_, gt, g.n, g.k, plane, db, base + partial_off);
  if (dx) {
    prepare_filter(plan, g, w, wt);
    TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, plan.bwd_data.math));
    TANDEM_CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn_, &one, plan.wd, wt, plan.yd, gt, plan.cd,
                                                    static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.bwd_data.algo), ws,
                                                    plan.bwd_data.workspace, &zero, plan.xd, in_t));
    float* dxout = plan.padded ? padded : dx;
    cuda_kernels::transpose_batched(stream_, in_t, dxout, g.n, g.c, input_plane(plan, g));
    if (plan.padded)
      cuda_kernels::crop_nhwc(stream_, padded, g.n, plan.hp, plan.wp, g.c, dx, g.h, g.w, g.pad_top, g.pad_left);
  }
  const float* xin = x;
  if (plan.padded) {
    cuda_kernels::pad_nhwc(stream_, x, g.n, g.h, g.w, g.c, padded, plan.hp, plan.wp, g.pad_top, g.pad_left);
    xin = padded;
  }
  cuda_kernels::transpose_batched(stream_, xin, in_t, g.n, input_plane(plan, g), g.c);
  TANDEM_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.cd, plan.bwd_filter.math));
  TANDEM_CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn_, &one, plan.xd, in_t, plan.yd, gt, plan.cd,
                                                    static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.bwd_filter.algo),
                                                    ws, plan.bwd_filter.workspace, &zero, plan.wd, wt));
  cuda_kernels::swap_outer_inner(stream_, wt, dw, g.k, g.c, int64_t(g.kh) * g.kw);  // KCRS -> HWIO
  return true;
}
#endif

// ---- pooling, regularisation, normalisation ------------------------------------------------------

void CudaBackend::maxpool_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax) {
  bind();
  if (replaying()) return;
  cuda_kernels::maxpool_forward(stream_, g, x, y, argmax);
}
void CudaBackend::maxpool_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  bind();
  if (replaying()) return;
  cuda_kernels::maxpool_backward(stream_, g, dy, argmax, dx);
}
void CudaBackend::dropout_forward(const DropoutParams& p, const float* x, float* y, float* mask) {
  bind();
  const uint64_t counters[2] = {p.step, p.first_sample};
  const void* dev = recording() ? record(counters, sizeof(counters)) : nullptr;
  if (replaying()) return;
  cuda_kernels::dropout_forward(stream_, p, x, y, mask, static_cast<const uint64_t*>(dev));
}

void CudaBackend::batchnorm_forward_train(const BatchNormParams& p, const float* x, const float* gamma,
                                          const float* beta, float* moving_mean, float* moving_var, float* y,
                                          float* save_mean, float* save_inv_std) {
  if (p.channels <= 0) return;
  bind();
  if (replaying()) return;
  void* s = scratch(cuda_kernels::batchnorm_scratch_bytes(p.rows, p.channels));
  cuda_kernels::batchnorm_forward_train(stream_, p, x, gamma, beta, moving_mean, moving_var, y, save_mean, save_inv_std,
                                        s);
}
void CudaBackend::batchnorm_forward_infer(const BatchNormParams& p, const float* x, const float* gamma,
                                          const float* beta, const float* moving_mean, const float* moving_var,
                                          float* y) {
  bind();
  if (replaying()) return;
  cuda_kernels::batchnorm_forward_infer(stream_, p, x, gamma, beta, moving_mean, moving_var, y);
}
void CudaBackend::batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                                     const float* save_mean, const float* save_inv_std, float* dx, float* dgamma,
                                     float* dbeta) {
  if (p.channels <= 0) return;
  bind();
  if (replaying()) return;
  void* s = scratch(cuda_kernels::batchnorm_scratch_bytes(p.rows, p.channels));
  cuda_kernels::batchnorm_backward(stream_, p, x, dy, gamma, save_mean, save_inv_std, dx, dgamma, dbeta, s);
}

// ---- output, loss, data, optimizers ----------------------------------------------------------------

void CudaBackend::softmax(const float* logits, float* probs, int64_t rows, int cols) {
  bind();
  if (replaying()) return;
  cuda_kernels::softmax(stream_, logits, probs, rows, cols);
}
void CudaBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* onehot, int64_t rows,
                                        int cols, float grad_scale, float* dlogits, double* metrics) {
  bind();
  if (replaying()) return;
  cuda_kernels::softmax_cross_entropy(stream_, logits, labels, onehot, rows, cols, grad_scale, dlogits, metrics);
}
void CudaBackend::gather_batch(const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                               int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot) {
  bind();
  if (replaying()) return;
  cuda_kernels::gather_batch(stream_, images, labels, index, rows, sample_elems, num_classes, x, labels_out, onehot);
}
void CudaBackend::sgd_update(const SgdParams& p, float* w, const float* g, float* velocity, size_t n) {
  bind();
  const void* dev = recording() ? record(&p.lr, sizeof(p.lr)) : nullptr;
  if (replaying()) return;
  cuda_kernels::sgd_update(stream_, p, w, g, velocity, n, static_cast<const float*>(dev));
}
void CudaBackend::adam_update(const AdamParams& p, float* w, const float* g, float* m, float* v, size_t n) {
  bind();
  // The same bias-corrected step size as the CPU (engine/optimizer_math.h).
  const float alpha = optimizer_math::adam_step_size(p.lr, p.beta1, p.beta2, p.step);
  const void* dev = recording() ? record(&alpha, sizeof(alpha)) : nullptr;
  if (replaying()) return;
  cuda_kernels::adam_update(stream_, p, alpha, w, g, m, v, n, static_cast<const float*>(dev));
}

// ---- CUDA Graphs -------------------------------------------------------------------------------

const void* CudaBackend::record(const void* src, size_t bytes, void* dst) {
  const size_t off = (record_cursor_ + 15) & ~size_t(15);
  if (off + bytes > kRecordBytes)
    throw_invalid("a training step's per-step data (" + std::to_string(off + bytes) +
                      " bytes) does not fit the CUDA graph record block (" + std::to_string(kRecordBytes) + " bytes)",
                  "train with --cuda-graphs off");
  record_cursor_ = off + bytes;
  std::memcpy(record_host_ + off, src, bytes);
  if (!dst) dst = record_dev_ + off;
  if (mode_ == GraphMode::Capture)
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, record_host_ + off, bytes, cudaMemcpyHostToDevice, stream_));
  return dst;
}

void CudaBackend::destroy_graphs() {
  for (auto& kv : graphs_)
    if (kv.second.exec) TANDEM_CUDA_WARN(cudaGraphExecDestroy(kv.second.exec));
  graphs_.clear();
  current_ = nullptr;
}

bool CudaBackend::begin_step_graph(uint64_t key) {
  bind();
  if (recording()) throw Error(ErrorKind::Internal, "a CUDA graph step began inside another", "train with --cuda-graphs off");
  if (!record_host_) {
    TANDEM_CUDA_CHECK(cudaHostAlloc(&record_host_, kRecordBytes, cudaHostAllocDefault));
    TANDEM_CUDA_CHECK(cudaMalloc(&record_dev_, kRecordBytes));
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&graph_done_, cudaEventDisableTiming));
  }
  StepGraph& g = graphs_[key];
  if (g.failed) return false;
  ++g.seen;
  if (!g.exec && g.seen < 2) return false;  // the first step of a shape runs eagerly
  // The record block is rewritten below: the last replay must have finished reading it.
  if (graph_launched_) TANDEM_CUDA_CHECK(cudaEventSynchronize(graph_done_));
  record_cursor_ = 0;
  current_ = &g;
  if (g.exec) {
    mode_ = GraphMode::Replay;
    return true;
  }
  TANDEM_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  mode_ = GraphMode::Capture;
  return true;
}

void CudaBackend::end_step_graph() {
  if (!recording()) return;
  bind();
  StepGraph& g = *current_;
  const GraphMode mode = mode_;
  mode_ = GraphMode::Eager;
  current_ = nullptr;
  if (mode == GraphMode::Capture) {
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (e != cudaSuccess) {
      g.failed = true;
      cuda_detail::throw_cuda(e, "cudaStreamEndCapture(stream_, &graph)", __FILE__, __LINE__);
    }
    e = cudaGraphInstantiate(&g.exec, graph, 0);
    TANDEM_CUDA_WARN(cudaGraphDestroy(graph));
    if (e != cudaSuccess) {
      g.exec = nullptr;
      g.failed = true;
      cuda_detail::throw_cuda(e, "cudaGraphInstantiate(&g.exec, graph, 0)", __FILE__, __LINE__);
    }
    g.recorded = record_cursor_;
    ++graph_counts_.captured;
  } else if (record_cursor_ != g.recorded) {
    throw Error(ErrorKind::Internal,
                "a replayed CUDA graph step recorded " + std::to_string(record_cursor_) + " bytes of per-step data, " +
                    "its capture " + std::to_string(g.recorded),
                "train with --cuda-graphs off");
  } else {
    ++graph_counts_.replayed;
  }
  TANDEM_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
  TANDEM_CUDA_CHECK(cudaEventRecord(graph_done_, stream_));
  graph_launched_ = true;
}

void CudaBackend::drop_step_graphs() noexcept {
  abandon_step_graph();
  if (graphs_.empty()) return;
  TANDEM_CUDA_WARN(cudaSetDevice(device_));
  TANDEM_CUDA_WARN(cudaStreamSynchronize(stream_));
  destroy_graphs();
}

void CudaBackend::abandon_step_graph() noexcept {
  if (!recording()) return;
  if (mode_ == GraphMode::Capture) {
    cudaGraph_t graph = nullptr;
    (void)cudaStreamEndCapture(stream_, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    if (current_) current_->failed = true;
  }
  mode_ = GraphMode::Eager;
  current_ = nullptr;
}

// ---- factory ------------------------------------------------------------------------------------

std::unique_ptr<Backend> make_cuda_backend(int device_index, const CudaBackendOptions& options) {
  std::string why;
  const int count = probe_devices(&why);
  if (count == 0)
    throw Error(ErrorKind::Device, "device gpu:" + std::to_string(device_index) + ": no GPU was found (" + why + ")",
                "use --device cpu, or run on a machine with an NVIDIA GPU and driver (check nvidia-smi)");
  if (device_index < 0 || device_index >= count)
    throw Error(ErrorKind::Device,
                "device gpu:" + std::to_string(device_index) + " does not exist: this machine has " +
                    std::to_string(count) +
                    (count == 1 ? " GPU (gpu:0)" : " GPUs (gpu:0 .. gpu:" + std::to_string(count - 1) + ")"),
                "choose --device gpu:0" + std::string(count > 1 ? " .. gpu:" + std::to_string(count - 1) : "") +
                    ", or use --device cpu");
  return std::make_unique<CudaBackend>(device_index, options);
}

std::unique_ptr<Backend> make_cuda_backend(int device_index) {
  CudaBackendOptions options;
  if (const char* p = std::getenv("TANDEM_GPU_PRECISION"); p && *p) options.precision = parse_gpu_precision(p);
  return make_cuda_backend(device_index, options);
}

void cuda_set_precision(Backend& backend, GpuPrecision precision) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  if (!cuda) throw_invalid("cannot set GPU precision on backend '" + backend.name() + "'", "only GPU backends have it");
  cuda->set_precision(precision);
}

void* cuda_native_stream(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  if (!cuda) throw_invalid("backend '" + backend.name() + "' has no CUDA stream", "only GPU backends have one");
  return cuda->stream();
}

}  // namespace tandem

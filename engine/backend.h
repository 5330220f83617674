// What a layer needs from a device. kernels/cpu implements it (the oracle for every test);
// kernels/cuda implements it with cuBLAS, cuDNN and our own kernels. All pointers passed to a
// Backend live in that backend's memory (host memory for the CPU backend). Layers never know
// which backend runs them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/tensor.h"

namespace tandem {

// NHWC input, HWIO filter, NHWC output. Padding is the amount added before the first row/column.
struct ConvGeometry {
  int n = 0, h = 0, w = 0, c = 0;  // input
  int kh = 0, kw = 0, k = 0;       // filter size and output channels
  int sh = 1, sw = 1;              // strides
  int pad_top = 0, pad_left = 0;
  int oh = 0, ow = 0;  // output
  // A 1x1 stride-1 unpadded convolution: a GEMM over the pixels, which both backends run as one.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pad_top == 0 && pad_left == 0; }
};

struct PoolGeometry {
  int n = 0, h = 0, w = 0, c = 0;
  int ph = 0, pw = 0;  // window
  int sh = 1, sw = 1;
  int pad_top = 0, pad_left = 0;
  int oh = 0, ow = 0;
};

// Dropout over a batch of `rows` samples of `cols` elements; sample r has global index first_sample + r.
struct DropoutParams {
  float rate = 0.f;
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t first_sample = 0;
  int64_t rows = 0, cols = 0;
  uint64_t layer = 0;  // distinguishes masks of different Dropout layers
};

// BatchNormalization over `rows` positions (N*H*W) of `channels` channels (channels last).
struct BatchNormParams {
  int64_t rows = 0;
  int channels = 0;
  float epsilon = 1e-3f;
  float momentum = 0.99f;  // moving = moving * momentum + batch * (1 - momentum), as Keras
};

struct SgdParams {
  float lr = 0.01f, momentum = 0.f;
  bool nesterov = false;
};

struct AdamParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-7f;
  int64_t step = 1;  // 1-based update count, for bias correction
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // --- memory --------------------------------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(float* x, size_t n, float value) = 0;
  virtual void synchronize() {}

  // --- CUDA Graphs (docs/ARCHITECTURE.md §10) ---------------------------------------------
  // A backend that can capture one training step and replay it. begin_step_graph(key) starts a
  // step of a shape named by `key`; it returns true when the step is recorded: the first step of
  // a shape runs eagerly (algorithm searches, scratch growth), the second is captured, later ones
  // replay the capture, and until end_step_graph() the op calls only record their per-step values
  // (uploaded indices, dropout counters, learning rates). The sequence of op calls must be the
  // same in every step of one key, on the same buffers. abandon_step_graph() ends a step that threw.
  // Default: no graphs.
  virtual bool begin_step_graph(uint64_t /*key*/) { return false; }
  virtual void end_step_graph() {}
  virtual void abandon_step_graph() noexcept {}
  // Forgets every captured step: captures hold the addresses of the buffers they ran on, so the
  // owner of those buffers drops them before freeing (Trainer::fit does, at its start and end).
  virtual void drop_step_graphs() noexcept {}
  // Steps captured and steps replayed since the backend was made (a captured step is launched
  // once as it is captured; replays are the launches after that).
  struct StepGraphCounts {
    int64_t captured = 0, replayed = 0;
  };
  virtual StepGraphCounts step_graph_counts() const { return {}; }

  // --- batch invariance (--batch-invariant) ---------------------------------------------
  // On: every op's bits depend only on its shapes and inputs, never on the thread count or on
  // timing (the CPU cuts GEMMs into fixed blocks, each run single-threaded; CUDA takes cuDNN's
  // heuristic algorithm choice instead of a timed search). The Trainer's leaves do the rest.
  // The backend will run forward passes only (serving, predict, evaluate): it may then use
  // kernels that are faster but whose rounding depends on the batch's shape (the CPU backend's
  // oneDNN GEMMs and convolutions). Training keeps kernels whose multi-replica equivalence the
  // tests hold to 1e-4 (with oneDNN in training, central-storage x2 of the cnn on generated data
  // differed from one replica by 7.7e-4; not yet understood).
  virtual void set_inference_only(bool /*on*/) {}
  virtual void set_batch_invariant(bool /*on*/) {}

  // --- dense algebra (row-major) -------------------------------------------------------
  // C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                    const float* b, int ldb, float beta, float* c, int ldc) = 0;
  // A Dense layer's whole forward: y[m,units] = act(x[m,in] w[in,units] + bias), act ReLU when
  // `relu`, else the identity; bias may be null. The default runs gemm, bias_add and
  // relu_forward; the CPU backend's inference mode runs oneDNN's inner product with both fused.
  virtual void dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in, int units,
                             float* y);
  virtual void bias_add(float* y, const float* bias, int64_t rows, int cols) = 0;  // y[r,c] += bias[c]
  virtual void bias_grad(const float* dy, float* db, int64_t rows, int cols) = 0;   // db[c] = sum_r dy[r,c]
  virtual void relu_forward(const float* x, float* y, size_t n) = 0;
  virtual void relu_backward(const float* y, const float* dy, float* dx, size_t n) = 0;  // dx = y > 0 ? dy : 0
  virtual void add(float* y, const float* x, size_t n) = 0;                               // y += x
  virtual void scale(float* x, size_t n, float s) = 0;                                   // x *= s

  // --- convolution and pooling (NHWC / HWIO) ------------------------------------------
  virtual void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) = 0;
  virtual void conv2d_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) = 0;
  virtual void conv2d_backward_filter(const ConvGeometry& g, const float* x, const float* dy, float* dw) = 0;
  // A Conv2D layer's whole forward: y = act(conv(x, w) + bias), act ReLU when `relu`, else the
  // identity; bias may be null. The default runs conv2d_forward, bias_add and relu_forward; a
  // backend may fuse them (the CUDA backend adds the bias and applies ReLU while it transposes
  // cuDNN's NCHW output back to NHWC).
  virtual void conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                                        bool relu, float* y);
  // Its backward, given the layer's input x and output y: with `relu` the gradient is masked by
  // y > 0 first; then dw, db (when not null) and dx (when not null). dy is the caller's scratch:
  // its contents afterwards are unspecified. The default runs relu_backward (into dy),
  // conv2d_backward_filter, bias_grad and conv2d_backward_data.
  virtual void conv2d_bias_relu_backward(const ConvGeometry& g, const float* x, const float* y, float* dy,
                                         const float* w, bool relu, float* dw, float* db, float* dx);
  // argmax[i] = index within the sample's input of the maximum for output element i; a null
  // argmax (a forward pass that no backward follows) records none
  virtual void maxpool_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax) = 0;
  virtual void maxpool_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) = 0;

  // --- regularisation and normalisation ------------------------------------------------
  // mask[i] = keep ? 1/(1-rate) : 0 ; y = x * mask
  virtual void dropout_forward(const DropoutParams& p, const float* x, float* y, float* mask) = 0;
  virtual void multiply(const float* a, const float* b, float* y, size_t n) = 0;  // y = a * b
  // Training mode: batch statistics; updates moving_mean/moving_var; saves mean and inv_std.
  virtual void batchnorm_forward_train(const BatchNormParams& p, const float* x, const float* gamma,
                                       const float* beta, float* moving_mean, float* moving_var, float* y,
                                       float* save_mean, float* save_inv_std) = 0;
  virtual void batchnorm_forward_infer(const BatchNormParams& p, const float* x, const float* gamma,
                                       const float* beta, const float* moving_mean, const float* moving_var,
                                       float* y) = 0;
  virtual void batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                                  const float* save_mean, const float* save_inv_std, float* dx, float* dgamma,
                                  float* dbeta) = 0;

  // --- output, loss and metrics ---------------------------------------------------------
  virtual void softmax(const float* logits, float* probs, int64_t rows, int cols) = 0;
  // Softmax cross-entropy from logits. Targets are sparse labels (int32) or, when onehot != nullptr,
  // one-hot rows. Writes dlogits = (softmax - target) * grad_scale (if dlogits != nullptr) and adds
  // the summed loss and the number of correct argmax predictions to metrics[0] and metrics[1].
  virtual void softmax_cross_entropy(const float* logits, const int32_t* labels, const float* onehot,
                                     int64_t rows, int cols, float grad_scale, float* dlogits,
                                     double* metrics) = 0;

  // --- data -------------------------------------------------------------------------------
  // x[r,:] = images[index[r],:] / 255 ; labels_out[r] = labels[index[r]] ; onehot (optional)
  virtual void gather_batch(const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                            int64_t sample_elems, int num_classes, float* x, int32_t* labels_out,
                            float* onehot) = 0;

  // --- optimizers over whole arenas ------------------------------------------------------
  virtual void sgd_update(const SgdParams& p, float* w, const float* g, float* velocity, size_t n) = 0;
  virtual void adam_update(const AdamParams& p, float* w, const float* g, float* m, float* v, size_t n) = 0;
};

}  // namespace tandem

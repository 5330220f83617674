// The CPU Backend: OpenBLAS for GEMM, im2col + GEMM for convolution, plain loops for the rest,
// split across a fixed thread pool. The reference oracle for every other backend.
#pragma once
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace tandem {

class OneDnnOps;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  ~CpuBackend() override;
  void set_inference_only(bool on) override { inference_only_ = on; }
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device{DeviceKind::Cpu, 0}; }
  int threads() const { return pool_.size(); }

  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void upload(void* dst, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(float* x, size_t n, float value) override;
  void set_batch_invariant(bool on) override;

  void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
            float beta, float* c, int ldc) override;
  void dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in, int units,
                     float* y) override;
  void bias_add(float* y, const float* bias, int64_t rows, int cols) override;
  void bias_grad(const float* dy, float* db, int64_t rows, int cols) override;
  void relu_forward(const float* x, float* y, size_t n) override;
  void relu_backward(const float* y, const float* dy, float* dx, size_t n) override;
  void add(float* y, const float* x, size_t n) override;
  void scale(float* x, size_t n, float s) override;

  void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) override;
  void conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu,
                                float* y) override;
  void conv2d_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) override;
  void conv2d_backward_filter(const ConvGeometry& g, const float* x, const float* dy, float* dw) override;
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
  void softmax_cross_entropy(const float* logits, const int32_t* labels, const float* onehot, int64_t rows,
                             int cols, float grad_scale, float* dlogits, double* metrics) override;
  void gather_batch(const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                    int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot) override;
  void sgd_update(const SgdParams& p, float* w, const float* g, float* velocity, size_t n) override;
  void adam_update(const AdamParams& p, float* w, const float* g, float* m, float* v, size_t n) override;

 private:
  // Samples per im2col chunk, so that the column buffer stays cache- and memory-friendly.
  int conv_chunk(const ConvGeometry& g) const;
  float* scratch(size_t floats);
  // Every write to memory the parameters can live in (upload, copy, fill, the optimizer updates)
  // passes through here: the oneDNN convolutions keep their filters re-laid out until then.
  void written(const void* p, size_t bytes);
  OneDnnOps& onednn();  // made on first use (TANDEM_HAVE_DNNL builds)
  void im2col(const ConvGeometry& g, const float* x, int samples, float* col);
  void col2im(const ConvGeometry& g, const float* col, int samples, float* dx);

  ThreadPool pool_;
  std::vector<float> scratch_;
  bool invariant_ = false;
  bool inference_only_ = false;
  std::unique_ptr<OneDnnOps> onednn_;  // oneDNN's convolutions and inner products, where built in
};

}  // namespace tandem

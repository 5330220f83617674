// Launchers for Tandem's own CUDA kernels (elementwise, reductions, pooling, loss, data,
// optimizers, layout helpers). Every launcher enqueues on `stream`, checks the launch, and does
// nothing for empty inputs. Reductions are deterministic: fixed work split, fixed summation order,
// no atomics. Scratch buffers are owned by the caller (CudaBackend) and sized by *_scratch_bytes.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/backend.h"

namespace tandem::cuda_kernels {

void fill(cudaStream_t s, float* x, size_t n, float value);
void relu_forward(cudaStream_t s, const float* x, float* y, size_t n);
void relu_backward(cudaStream_t s, const float* y, const float* dy, float* dx, size_t n);
void add(cudaStream_t s, float* y, const float* x, size_t n);
void scale(cudaStream_t s, float* x, size_t n, float factor);
void multiply(cudaStream_t s, const float* a, const float* b, float* y, size_t n);
// c[i, j] *= beta for a row-major m x n block with leading dimension ldc (GEMM with k == 0).
void scale_matrix(cudaStream_t s, float* c, int m, int n, int ldc, float beta);

void bias_add(cudaStream_t s, float* y, const float* bias, int64_t rows, int cols);
// Scratch for per-column reductions over `rows` rows with `values` sums per element.
size_t column_reduce_scratch_bytes(int64_t rows, int cols, int values);
void bias_grad(cudaStream_t s, const float* dy, float* db, int64_t rows, int cols, void* scratch);

void maxpool_forward(cudaStream_t s, const PoolGeometry& g, const float* x, float* y, int32_t* argmax);
void maxpool_backward(cudaStream_t s, const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx);

// The device pointers below (counters, lr_dev, alpha_dev), when set, hold the per-step values of a
// CUDA graph replay, read by the kernel instead of the arguments captured with it.
// counters: {step, first_sample}.
void dropout_forward(cudaStream_t s, const DropoutParams& p, const float* x, float* y, float* mask,
                     const uint64_t* counters = nullptr);

// Scratch for batch normalisation: column reductions plus 3 * channels floats of coefficients.
size_t batchnorm_scratch_bytes(int64_t rows, int channels);
void batchnorm_forward_train(cudaStream_t s, const BatchNormParams& p, const float* x, const float* gamma,
                             const float* beta, float* moving_mean, float* moving_var, float* y, float* save_mean,
                             float* save_inv_std, void* scratch);
void batchnorm_forward_infer(cudaStream_t s, const BatchNormParams& p, const float* x, const float* gamma,
                             const float* beta, const float* moving_mean, const float* moving_var, float* y);
void batchnorm_backward(cudaStream_t s, const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                        const float* save_mean, const float* save_inv_std, float* dx, float* dgamma, float* dbeta,
                        void* scratch);

void softmax(cudaStream_t s, const float* logits, float* probs, int64_t rows, int cols);
void softmax_cross_entropy(cudaStream_t s, const float* logits, const int32_t* labels, const float* onehot,
                           int64_t rows, int cols, float grad_scale, float* dlogits, double* metrics);

void gather_batch(cudaStream_t s, const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                  int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot);

void sgd_update(cudaStream_t s, const SgdParams& p, float* w, const float* g, float* velocity, size_t n,
                const float* lr_dev = nullptr);
// alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t), computed by the caller in double as the CPU does.
void adam_update(cudaStream_t s, const AdamParams& p, float alpha, float* w, const float* g, float* m, float* v,
                 size_t n, const float* alpha_dev = nullptr);

// out[c, r] = in[r, c] for a row-major rows x cols matrix (out is cols x rows).
void transpose(cudaStream_t s, const float* in, float* out, int64_t rows, int64_t cols);
// `batch` back-to-back [rows, cols] matrices, each transposed (NHWC <-> NCHW per sample).
void transpose_batched(cudaStream_t s, const float* in, float* out, int64_t batch, int64_t rows, int64_t cols);
// transpose_batched with bias and ReLU applied on the way out: out[b][c][r] = act(in[b][r][c] +
// bias[r]) (NCHW -> NHWC of a convolution's output, r its channel); bias may be null.
void transpose_batched_bias_relu(cudaStream_t s, const float* in, float* out, int64_t batch, int64_t rows,
                                 int64_t cols, const float* bias, bool relu);
// transpose_batched of ReLU's gradient: out[b][c][r] = y[b][r][c] > 0 ? dy[b][r][c] : 0.
void transpose_batched_relu_grad(cudaStream_t s, const float* dy, const float* y, float* out, int64_t batch,
                                 int64_t rows, int64_t cols);
// out[c] = sum over samples and the plane of x[n][c][plane] (NCHW), deterministically in double.
size_t channel_sum_scratch_bytes(int64_t n, int k, int64_t plane);
void channel_sum_nchw(cudaStream_t s, const float* x, int64_t n, int k, int64_t plane, float* out, void* scratch);
// out[k][j][i] = in[i][j][k], in of shape [a, b, c] (filters: HWIO <-> KCRS).
void swap_outer_inner(cudaStream_t s, const float* in, float* out, int64_t a, int64_t b, int64_t c);

// Convolution helpers for the im2col path (used without cuDNN, or for geometries cuDNN cannot
// express, e.g. TensorFlow's asymmetric "same" padding). Samples [0, samples) of x.
void im2col(cudaStream_t s, const ConvGeometry& g, const float* x, int samples, float* col);
// dx (samples x h x w x c) = sum of the column entries that read each input element (no atomics).
void col2im(cudaStream_t s, const ConvGeometry& g, const float* col, int samples, float* dx);
// Zero-pads x [n,h,w,c] into xp [n,hp,wp,c] at offset (top, left); and the reverse crop.
void pad_nhwc(cudaStream_t s, const float* x, int n, int h, int w, int c, float* xp, int hp, int wp, int top, int left);
void crop_nhwc(cudaStream_t s, const float* xp, int n, int hp, int wp, int c, float* x, int h, int w, int top,
               int left);

}  // namespace tandem::cuda_kernels

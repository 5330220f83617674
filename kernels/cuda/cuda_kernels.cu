// Tandem's own CUDA kernels. They compute the same math as kernels/cpu/cpu_backend.cpp; where the
// CPU evaluates a float expression step by step, the kernels use the _rn intrinsics so that nvcc
// does not contract it into FMAs (the optimizer updates then match the CPU bit for bit).
#include <math_constants.h>

#include <algorithm>
#include <cmath>

#include "engine/rng.h"
#include "engine/optimizer_math.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.cuh"

namespace tandem::cuda_kernels {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;

unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t g = (n + block - 1) / block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(g, kMaxGrid)));
}

__device__ __forceinline__ int64_t global_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t global_stride() { return int64_t(gridDim.x) * blockDim.x; }

// Sample, row, column and channel of element i of an [n, h, w, c] tensor, in index type I.
template <class I>
struct NhwcIndex {
  I s;
  int y, x, c;
};
template <class I>
__device__ __forceinline__ NhwcIndex<I> nhwc_of(I i, int h, int w, int c) {
  NhwcIndex<I> r;
  r.c = static_cast<int>(i % c);
  I t = i / c;
  r.x = static_cast<int>(t % w);
  t /= w;
  r.y = static_cast<int>(t % h);
  r.s = t / h;
  return r;
}

// ---- elementwise ------------------------------------------------------------------------------

__global__ void fill_kernel(float* x, int64_t n, float v) {
  for (int64_t i = global_index(); i < n; i += global_stride()) x[i] = v;
}
__global__ void relu_forward_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) {
    float v = x[i];
    y[i] = v > 0.f ? v : 0.f;
  }
}
__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}
__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = __fadd_rn(y[i], x[i]);
}
__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = global_index(); i < n; i += global_stride()) x[i] = __fmul_rn(x[i], s);
}
__global__ void multiply_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = global_index(); i < n; i += global_stride()) y[i] = __fmul_rn(a[i], b[i]);
}
__global__ void scale_matrix_kernel(float* c, int m, int n, int ldc, float beta) {
  const int64_t total = int64_t(m) * n;
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    int64_t r = i / n, col = i % n;
    c[r * ldc + col] = __fmul_rn(c[r * ldc + col], beta);
  }
}
__global__ void bias_add_kernel(float* y, const float* bias, int64_t total, int cols) {
  for (int64_t i = global_index(); i < total; i += global_stride()) y[i] = __fadd_rn(y[i], bias[i % cols]);
}

// ---- deterministic per-column reductions --------------------------------------------------------
// Block (32 x 8) covers 32 columns of one chunk of rows; each thread sums every 8th row of its
// column in double, the 8 partial sums are combined in a fixed order, and a second kernel adds
// the chunks of each column in chunk order. The result depends only on (rows, cols).

constexpr int kRedCols = 32, kRedRows = 8;

struct ReducePlan {
  int chunks;
  int64_t rows_per_chunk;
};

ReducePlan reduce_plan(int64_t rows, int cols) {
  const int64_t col_blocks = (cols + kRedCols - 1) / kRedCols;
  const int64_t want = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, col_blocks));
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, std::min<int64_t>(want, 1024)));
  int64_t per = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (rows + per - 1) / per);
  return {static_cast<int>(chunks), per};
}

struct SumOp {
  const float* x;
  int cols;
  __device__ void operator()(int64_t r, int c, double* acc) const { acc[0] += double(x[r * cols + c]); }
};
struct SquaredDeviationOp {
  const float* x;
  const float* mean;
  int cols;
  __device__ void operator()(int64_t r, int c, double* acc) const {
    double d = double(x[r * cols + c]) - double(mean[c]);
    acc[0] += d * d;
  }
};
struct BatchNormBackwardOp {
  const float* x;
  const float* dy;
  const float* mean;
  const float* inv_std;
  int cols;
  __device__ void operator()(int64_t r, int c, double* acc) const {
    double g = dy[r * cols + c];
    double xhat = (double(x[r * cols + c]) - double(mean[c])) * double(inv_std[c]);
    acc[0] += g;
    acc[1] += g * xhat;
    acc[2] += xhat;
  }
};

// partial layout: [value][chunk][col]
template <int NV, class Op>
__global__ void column_partial_kernel(Op op, int64_t rows, int cols, int64_t rows_per_chunk, int chunks,
                                      double* partial) {
  __shared__ double sh[NV][kRedRows][kRedCols + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * kRedCols + tx;
  const int chunk = blockIdx.y;
  const int64_t r0 = int64_t(chunk) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double acc[NV];
#pragma unroll
  for (int v = 0; v < NV; ++v) acc[v] = 0.0;
  if (c < cols)
    for (int64_t r = r0 + ty; r < r1; r += kRedRows) op(r, c, acc);
#pragma unroll
  for (int v = 0; v < NV; ++v) sh[v][ty][tx] = acc[v];
  __syncthreads();
  if (ty == 0 && c < cols) {
#pragma unroll
    for (int v = 0; v < NV; ++v) {
      double s = 0.0;
      for (int k = 0; k < kRedRows; ++k) s += sh[v][k][tx];
      partial[(size_t(v) * chunks + chunk) * cols + c] = s;
    }
  }
}

template <int NV, class Op>
void column_partials(cudaStream_t s, Op op, int64_t rows, int cols, const ReducePlan& plan, double* partial) {
  dim3 grid(static_cast<unsigned>((cols + kRedCols - 1) / kRedCols), static_cast<unsigned>(plan.chunks));
  dim3 block(kRedCols, kRedRows);
  auto kernel = column_partial_kernel<NV, Op>;
  TANDEM_LAUNCH(kernel, grid, block, 0, s, op, rows, cols, plan.rows_per_chunk, plan.chunks, partial);
}

__device__ __forceinline__ double chunk_sum(const double* partial, int v, int chunks, int cols, int c) {
  double s = 0.0;
  for (int k = 0; k < chunks; ++k) s += partial[(size_t(v) * chunks + k) * cols + c];
  return s;
}

__global__ void bias_grad_finalize(const double* partial, int chunks, int cols, float* db) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < cols) db[c] = static_cast<float>(chunk_sum(partial, 0, chunks, cols, c));
}

__global__ void bn_mean_finalize(const double* partial, int chunks, int cols, int64_t rows, float* mean) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < cols) mean[c] = rows ? static_cast<float>(chunk_sum(partial, 0, chunks, cols, c) / double(rows)) : 0.f;
}

__global__ void bn_var_finalize(const double* partial, int chunks, int cols, int64_t rows, float epsilon,
                                float momentum, const float* mean, float* inv_std, float* moving_mean,
                                float* moving_var) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float var = rows ? static_cast<float>(chunk_sum(partial, 0, chunks, cols, c) / double(rows)) : 0.f;
  inv_std[c] = __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(var, epsilon)));
  const float keep = momentum, take = __fsub_rn(1.f, momentum);
  moving_mean[c] = __fadd_rn(__fmul_rn(moving_mean[c], keep), __fmul_rn(mean[c], take));
  moving_var[c] = __fadd_rn(__fmul_rn(moving_var[c], keep), __fmul_rn(var, take));
}

// coef layout: [mdy | mx | mdyx], each cols floats.
__global__ void bn_backward_finalize(const double* partial, int chunks, int cols, int64_t rows, float* dgamma,
                                     float* dbeta, float* coef) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const double n = double(rows > 1 ? rows : 1);
  double sdy = chunk_sum(partial, 0, chunks, cols, c);
  double sdyx = chunk_sum(partial, 1, chunks, cols, c);
  double sx = chunk_sum(partial, 2, chunks, cols, c);
  dbeta[c] = static_cast<float>(sdy);
  dgamma[c] = static_cast<float>(sdyx);
  coef[c] = static_cast<float>(sdy / n);
  coef[cols + c] = static_cast<float>(sx / n);
  coef[2 * cols + c] = static_cast<float>((sdyx - sx / n * sdy) / n);
}

__global__ void bn_normalize_kernel(const float* x, const float* mean, const float* inv_std, const float* gamma,
                                    const float* beta, float* y, int64_t total, int cols) {
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    int c = static_cast<int>(i % cols);
    y[i] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(x[i], mean[c]), inv_std[c]), gamma[c]), beta[c]);
  }
}

__global__ void bn_infer_kernel(const float* x, const float* gamma, const float* beta, const float* mean,
                                const float* var, float epsilon, float* y, int64_t total, int cols) {
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    int c = static_cast<int>(i % cols);
    float a = __fdiv_rn(gamma[c], __fsqrt_rn(__fadd_rn(var[c], epsilon)));
    float b0 = __fsub_rn(beta[c], __fmul_rn(mean[c], a));
    y[i] = __fadd_rn(__fmul_rn(x[i], a), b0);
  }
}

__global__ void bn_backward_dx_kernel(const float* x, const float* dy, const float* gamma, const float* mean,
                                      const float* inv_std, const float* coef, float* dx, int64_t total, int cols) {
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    int c = static_cast<int>(i % cols);
    float xhat = __fsub_rn(__fmul_rn(__fsub_rn(x[i], mean[c]), inv_std[c]), coef[cols + c]);
    float inner = __fsub_rn(__fsub_rn(dy[i], coef[c]), __fmul_rn(xhat, coef[2 * cols + c]));
    dx[i] = __fmul_rn(__fmul_rn(gamma[c], inv_std[c]), inner);
  }
}

// ---- pooling ------------------------------------------------------------------------------------

// Index arithmetic in I: int where every index fits (the usual case; 64-bit division is many
// times slower on the GPU), int64_t otherwise.
template <class I>
__global__ void maxpool_forward_kernel(PoolGeometry g, const float* x, float* y, int32_t* argmax, I total) {
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += I(gridDim.x) * blockDim.x) {
    const NhwcIndex<I> at = nhwc_of(o, g.oh, g.ow, g.c);
    const int c = at.c, ox = at.x, oy = at.y;
    const float* xs = x + at.s * (I(g.h) * g.w * g.c);
    float best = -INFINITY;
    int32_t best_idx = -1;
    for (int ky = 0; ky < g.ph; ++ky) {
      int iy = oy * g.sh - g.pad_top + ky;
      if (iy < 0 || iy >= g.h) continue;
      for (int kx = 0; kx < g.pw; ++kx) {
        int ix = ox * g.sw - g.pad_left + kx;
        if (ix < 0 || ix >= g.w) continue;
        int32_t idx = (iy * g.w + ix) * g.c + c;
        float v = xs[idx];
        if (v > best || best_idx < 0) {
          best = v;
          best_idx = idx;
        }
      }
    }
    y[o] = best;
    if (argmax) argmax[o] = best_idx;
  }
}

// Gathers into each input element the gradients of the outputs whose argmax points at it, in
// increasing (oy, ox) order, as the CPU does (no atomics).
template <class I>
__global__ void maxpool_backward_kernel(PoolGeometry g, const float* dy, const int32_t* argmax, float* dx, I total) {
  const I out_s = I(g.oh) * g.ow * g.c;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += I(gridDim.x) * blockDim.x) {
    const NhwcIndex<I> at = nhwc_of(i, g.h, g.w, g.c);
    const int c = at.c, ix = at.x, iy = at.y;
    const I s = at.s;
    const int32_t self = (iy * g.w + ix) * g.c + c;
    const int lo_y = iy + g.pad_top - g.ph + 1, lo_x = ix + g.pad_left - g.pw + 1;
    const int oy0 = lo_y <= 0 ? 0 : (lo_y + g.sh - 1) / g.sh;
    const int ox0 = lo_x <= 0 ? 0 : (lo_x + g.sw - 1) / g.sw;
    const int oy1 = min(g.oh - 1, (iy + g.pad_top) / g.sh);
    const int ox1 = min(g.ow - 1, (ix + g.pad_left) / g.sw);
    float acc = 0.f;
    const int32_t* as = argmax + s * out_s;
    const float* gs = dy + s * out_s;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        I o = (I(oy) * g.ow + ox) * g.c + c;
        if (as[o] == self) acc = __fadd_rn(acc, gs[o]);
      }
    dx[i] = acc;
  }
}

// Windows that tile the input exactly (stride = window, no padding, no leftover rows or columns):
// every input element belongs to one window, so one thread per output writes its whole window
// (the gradient where the argmax is, zero elsewhere). Same values as the gather above.
template <class I>
__global__ void maxpool_backward_tiled_kernel(PoolGeometry g, const float* dy, const int32_t* argmax, float* dx,
                                              I total) {
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += I(gridDim.x) * blockDim.x) {
    const NhwcIndex<I> at = nhwc_of(o, g.oh, g.ow, g.c);
    const int c = at.c, ox = at.x, oy = at.y;
    const int32_t am = argmax[o];
    const float v = __fadd_rn(0.f, dy[o]);
    float* xs = dx + at.s * (I(g.h) * g.w * g.c);
    for (int ky = 0; ky < g.ph; ++ky)
      for (int kx = 0; kx < g.pw; ++kx) {
        const int32_t idx = ((oy * g.sh + ky) * g.w + ox * g.sw + kx) * g.c + c;
        xs[idx] = idx == am ? v : 0.f;
      }
  }
}

// ---- dropout ------------------------------------------------------------------------------------

// `counters`, when set (a CUDA graph step), holds {step, first_sample} for this replay.
__global__ void dropout_kernel(float rate, uint64_t seed, uint64_t step, uint64_t first_sample, int64_t cols,
                               float keep_scale, const float* x, float* y, float* mask, int64_t total,
                               const uint64_t* counters) {
  if (counters) {
    step = counters[0];
    first_sample = counters[1];
  }
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const int64_t r = i / cols, c = i % cols;
    const float m = tandem::dropout_keep(seed, step, first_sample + uint64_t(r), uint64_t(c), rate) ? keep_scale : 0.f;
    mask[i] = m;
    y[i] = __fmul_rn(x[i], m);
  }
}

// ---- softmax and loss ---------------------------------------------------------------------------

struct ArgMax {
  float v;
  int i;
};
// Larger value wins; on ties the smaller index (the CPU's "first maximum").
__device__ __forceinline__ ArgMax argmax_combine(ArgMax a, ArgMax b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}
__device__ __forceinline__ ArgMax warp_argmax(ArgMax a) {
  for (int off = 16; off > 0; off >>= 1) {
    ArgMax o{__shfl_xor_sync(0xffffffffu, a.v, off), __shfl_xor_sync(0xffffffffu, a.i, off)};
    a = argmax_combine(a, o);
  }
  return a;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ ArgMax row_argmax(const float* z, int cols, int lane) {
  ArgMax a{-INFINITY, -1};
  for (int c = lane; c < cols; c += 32)
    if (a.i < 0 || z[c] > a.v) a = ArgMax{z[c], c};
  return warp_argmax(a);
}

// One warp per row.
__global__ void softmax_kernel(const float* logits, float* probs, int64_t rows, int cols) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const float* z = logits + r * cols;
    float* p = probs + r * cols;
    const double mx = row_argmax(z, cols, lane).v;
    double s = 0.0;
    for (int c = lane; c < cols; c += 32) s += exp(double(z[c]) - mx);
    s = warp_sum(s);
    for (int c = lane; c < cols; c += 32) p[c] = static_cast<float>(exp(double(z[c]) - mx) / s);
  }
}

// One block: warp w handles rows w, w + 32, ...; the per-warp sums are combined in warp order, so
// the metrics added to metrics[0..1] are deterministic for a given number of rows.
constexpr int kLossThreads = 1024;
__global__ void __launch_bounds__(kLossThreads) softmax_cross_entropy_kernel(const float* logits, const int32_t* labels, const float* onehot,
                                             int64_t rows, int cols, float grad_scale, float* dlogits,
                                             double* metrics) {
  __shared__ double loss_sh[kLossThreads / 32];
  __shared__ double correct_sh[kLossThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  double loss = 0.0, correct = 0.0;
  for (int64_t r = warp; r < rows; r += warps) {
    const float* z = logits + r * cols;
    const ArgMax best = row_argmax(z, cols, lane);
    const double mx = best.v;
    double s = 0.0;
    for (int c = lane; c < cols; c += 32) s += exp(double(z[c]) - mx);
    s = warp_sum(s);
    const double lse = mx + log(s);
    int target;
    double row_loss;
    if (onehot) {
      const float* t = onehot + r * cols;
      target = row_argmax(t, cols, lane).i;
      double l = 0.0;
      for (int c = lane; c < cols; c += 32) l += double(t[c]) * (lse - double(z[c]));
      row_loss = warp_sum(l);
    } else {
      target = labels[r];
      row_loss = (target >= 0 && target < cols) ? lse - double(z[target]) : CUDART_NAN;
    }
    loss += row_loss;
    if (best.i == target) correct += 1.0;
    if (dlogits) {
      float* d = dlogits + r * cols;
      for (int c = lane; c < cols; c += 32) {
        double p = exp(double(z[c]) - lse);
        double t = onehot ? double(onehot[r * cols + c]) : (c == target ? 1.0 : 0.0);
        d[c] = static_cast<float>((p - t) * double(grad_scale));
      }
    }
  }
  if (lane == 0) {
    loss_sh[warp] = loss;
    correct_sh[warp] = correct;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double l = 0.0, k = 0.0;
    for (int w = 0; w < warps; ++w) {
      l += loss_sh[w];
      k += correct_sh[w];
    }
    metrics[0] += l;
    metrics[1] += k;
  }
}

// ---- data ---------------------------------------------------------------------------------------

__global__ void gather_images_kernel(const uint8_t* images, const int32_t* index, int64_t rows, int64_t elems,
                                     float* x) {
  const int64_t total = rows * elems;
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const int64_t r = i / elems, e = i % elems;
    x[i] = __fdiv_rn(static_cast<float>(images[int64_t(index[r]) * elems + e]), 255.0f);
  }
}
__global__ void gather_labels_kernel(const uint8_t* labels, const int32_t* index, int64_t rows, int num_classes,
                                     int32_t* labels_out, float* onehot) {
  for (int64_t r = global_index(); r < rows; r += global_stride()) {
    const int32_t label = labels[index[r]];
    if (labels_out) labels_out[r] = label;
    if (onehot)
      for (int c = 0; c < num_classes; ++c) onehot[r * num_classes + c] = c == label ? 1.f : 0.f;
  }
}

// ---- optimizers ---------------------------------------------------------------------------------

// lr_dev / alpha_dev, when set (a CUDA graph step), hold this replay's value.
__global__ void sgd_plain_kernel(float lr, float* w, const float* g, int64_t n, const float* lr_dev) {
  if (lr_dev) lr = *lr_dev;
  for (int64_t i = global_index(); i < n; i += global_stride()) optimizer_math::sgd(lr, w[i], g[i]);
}
__global__ void sgd_momentum_kernel(float lr, float momentum, bool nesterov, float* w, const float* g, float* vel,
                                    int64_t n, const float* lr_dev) {
  if (lr_dev) lr = *lr_dev;
  for (int64_t i = global_index(); i < n; i += global_stride())
    optimizer_math::sgd_momentum(lr, momentum, nesterov, w[i], g[i], vel[i]);
}
__global__ void adam_kernel(float alpha, float beta1, float beta2, float epsilon, float* w, const float* g, float* m,
                            float* v, int64_t n, const float* alpha_dev) {
  if (alpha_dev) alpha = *alpha_dev;
  const float one_b1 = __fsub_rn(1.f, beta1), one_b2 = __fsub_rn(1.f, beta2);
  for (int64_t i = global_index(); i < n; i += global_stride())
    optimizer_math::adam(alpha, one_b1, one_b2, epsilon, w[i], g[i], m[i], v[i]);
}

// ---- layout helpers -----------------------------------------------------------------------------

// One [rows, cols] -> [cols, rows] transpose per blockIdx.z (a batch of matrices, back to back).
// Epilogues: kMask reads in[i] as mask[i] > 0 ? in[i] : 0 (ReLU's gradient; mask has in's layout);
// kBias adds bias[r] (r: the input row) and kRelu clamps at zero on the way out. Each is the same
// float operation as relu_backward, bias_add and relu_forward, so the results are bit-identical.
template <bool kMask, bool kBias, bool kRelu>
__global__ void transpose_kernel(const float* in, float* out, int64_t rows, int64_t cols, const float* mask,
                                 const float* bias) {
  __shared__ float tile[32][33];
  const int64_t off = int64_t(blockIdx.z) * rows * cols;
  in += off;
  out += off;
  if (kMask) mask += off;
  const int64_t c0 = int64_t(blockIdx.x) * 32, r0 = int64_t(blockIdx.y) * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    int64_t r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) {
      float v = in[r * cols + c];
      if (kMask) v = mask[r * cols + c] > 0.f ? v : 0.f;
      tile[k][threadIdx.x] = v;
    }
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    int64_t c = c0 + k, r = r0 + threadIdx.x;
    if (r < rows && c < cols) {
      float v = tile[threadIdx.x][k];
      if (kBias) v = __fadd_rn(v, bias[r]);
      if (kRelu) v = v > 0.f ? v : 0.f;
      out[c * rows + r] = v;
    }
  }
}

// ---- per-channel sums of NCHW tensors ---------------------------------------------------------
// Block (c, chunk) sums channel c over samples [chunk * per, ...) in double, in a fixed order
// (thread-strided, then a shared-memory tree); a second kernel adds the chunks in chunk order.

constexpr int kChannelBlock = 256;

__global__ void channel_partial_kernel(const float* x, int n, int k, int plane, int per, int chunks,
                                       double* partial) {
  __shared__ double sh[kChannelBlock];
  const int c = blockIdx.x, chunk = blockIdx.y;
  const int s0 = chunk * per;
  const int s1 = min(n, s0 + per);
  const int count = (s1 - s0) * plane;
  double acc = 0.0;
  for (int j = threadIdx.x; j < count; j += kChannelBlock) {
    const int s = s0 + j / plane, p = j % plane;
    acc += double(x[(int64_t(s) * k + c) * plane + p]);
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kChannelBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[int64_t(c) * chunks + chunk] = sh[0];
}

__global__ void channel_finalize_kernel(const double* partial, int chunks, int k, float* out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= k) return;
  double s = 0.0;
  for (int i = 0; i < chunks; ++i) s += partial[int64_t(c) * chunks + i];
  out[c] = static_cast<float>(s);
}

struct ChannelPlan {
  int chunks, per;
};
ChannelPlan channel_plan(int64_t n, int k, int64_t plane) {
  // About 2048 blocks in all, and at most 2^30 elements per block (int indexing).
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n, (2048 + k - 1) / std::max(k, 1)));
  chunks = std::max<int64_t>(chunks, (n * plane + (int64_t(1) << 30) - 1) >> 30);
  chunks = std::min<int64_t>(chunks, std::max<int64_t>(n, 1));
  const int64_t per = std::max<int64_t>(1, (n + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (n + per - 1) / per);
  return {static_cast<int>(chunks), static_cast<int>(per)};
}

// out[k][j][i] = in[i][j][k] for in of shape [a, b, c] (filters: HWIO <-> KCRS).
__global__ void swap_outer_inner_kernel(const float* in, float* out, int64_t a, int64_t b, int64_t c, int64_t total) {
  for (int64_t idx = global_index(); idx < total; idx += global_stride()) {
    const int64_t k = idx % c, j = (idx / c) % b, i = idx / (b * c);
    out[(k * b + j) * a + i] = in[idx];
  }
}

__global__ void im2col_kernel(ConvGeometry g, const float* x, float* col, int64_t total) {
  const int64_t kk = int64_t(g.kh) * g.kw * g.c;
  const int64_t plane = int64_t(g.oh) * g.ow;
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const int64_t r = i / kk, j = i % kk;
    const int c = static_cast<int>(j % g.c);
    const int t = static_cast<int>(j / g.c);
    const int kx = t % g.kw, ky = t / g.kw;
    const int64_t s = r / plane;
    const int rem = static_cast<int>(r % plane);
    const int oy = rem / g.ow, ox = rem % g.ow;
    const int iy = oy * g.sh - g.pad_top + ky, ix = ox * g.sw - g.pad_left + kx;
    col[i] = (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) ? 0.f : x[((s * g.h + iy) * g.w + ix) * g.c + c];
  }
}

// Sums, for each input element, the column entries that read it, in increasing (oy, ox) order
// (as the CPU's col2im).
__global__ void col2im_kernel(ConvGeometry g, const float* col, float* dx, int64_t total) {
  const int64_t kk = int64_t(g.kh) * g.kw * g.c;
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const NhwcIndex<int64_t> at = nhwc_of(i, g.h, g.w, g.c);
    const int c = at.c, ix = at.x, iy = at.y;
    const int64_t s = at.s;
    float acc = 0.f;
    for (int ky = g.kh - 1; ky >= 0; --ky) {
      const int ny = iy + g.pad_top - ky;
      if (ny < 0 || ny % g.sh) continue;
      const int oy = ny / g.sh;
      if (oy >= g.oh) continue;
      for (int kx = g.kw - 1; kx >= 0; --kx) {
        const int nx = ix + g.pad_left - kx;
        if (nx < 0 || nx % g.sw) continue;
        const int ox = nx / g.sw;
        if (ox >= g.ow) continue;
        acc = __fadd_rn(acc, col[((s * g.oh + oy) * g.ow + ox) * kk + (int64_t(ky) * g.kw + kx) * g.c + c]);
      }
    }
    dx[i] = acc;
  }
}

__global__ void pad_kernel(const float* x, int h, int w, int c, float* xp, int hp, int wp, int top, int left,
                           int64_t total) {
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const NhwcIndex<int64_t> at = nhwc_of(i, hp, wp, c);
    const int iy = at.y - top, ix = at.x - left;
    xp[i] = (iy < 0 || iy >= h || ix < 0 || ix >= w) ? 0.f : x[((at.s * h + iy) * w + ix) * c + at.c];
  }
}
__global__ void crop_kernel(const float* xp, int hp, int wp, int c, float* x, int h, int w, int top, int left,
                            int64_t total) {
  for (int64_t i = global_index(); i < total; i += global_stride()) {
    const NhwcIndex<int64_t> at = nhwc_of(i, h, w, c);
    const int py = at.y + top, px = at.x + left;
    x[i] = (py < hp && px < wp) ? xp[((at.s * hp + py) * wp + px) * c + at.c] : 0.f;
  }
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

void fill(cudaStream_t s, float* x, size_t n, float value) {
  if (n) TANDEM_LAUNCH(fill_kernel, grid_for(int64_t(n)), kBlock, 0, s, x, int64_t(n), value);
}
void relu_forward(cudaStream_t s, const float* x, float* y, size_t n) {
  if (n) TANDEM_LAUNCH(relu_forward_kernel, grid_for(int64_t(n)), kBlock, 0, s, x, y, int64_t(n));
}
void relu_backward(cudaStream_t s, const float* y, const float* dy, float* dx, size_t n) {
  if (n) TANDEM_LAUNCH(relu_backward_kernel, grid_for(int64_t(n)), kBlock, 0, s, y, dy, dx, int64_t(n));
}
void add(cudaStream_t s, float* y, const float* x, size_t n) {
  if (n) TANDEM_LAUNCH(add_kernel, grid_for(int64_t(n)), kBlock, 0, s, y, x, int64_t(n));
}
void scale(cudaStream_t s, float* x, size_t n, float factor) {
  if (n) TANDEM_LAUNCH(scale_kernel, grid_for(int64_t(n)), kBlock, 0, s, x, int64_t(n), factor);
}
void multiply(cudaStream_t s, const float* a, const float* b, float* y, size_t n) {
  if (n) TANDEM_LAUNCH(multiply_kernel, grid_for(int64_t(n)), kBlock, 0, s, a, b, y, int64_t(n));
}
void scale_matrix(cudaStream_t s, float* c, int m, int n, int ldc, float beta) {
  if (m > 0 && n > 0) TANDEM_LAUNCH(scale_matrix_kernel, grid_for(int64_t(m) * n), kBlock, 0, s, c, m, n, ldc, beta);
}
void bias_add(cudaStream_t s, float* y, const float* bias, int64_t rows, int cols) {
  if (rows > 0 && cols > 0)
    TANDEM_LAUNCH(bias_add_kernel, grid_for(rows * cols), kBlock, 0, s, y, bias, rows * cols, cols);
}

size_t column_reduce_scratch_bytes(int64_t rows, int cols, int values) {
  ReducePlan plan = reduce_plan(rows, cols);
  return sizeof(double) * size_t(values) * size_t(plan.chunks) * size_t(std::max(cols, 1));
}

void bias_grad(cudaStream_t s, const float* dy, float* db, int64_t rows, int cols, void* scratch) {
  if (cols <= 0) return;
  const ReducePlan plan = reduce_plan(rows, cols);
  double* partial = static_cast<double*>(scratch);
  column_partials<1>(s, SumOp{dy, cols}, rows, cols, plan, partial);
  TANDEM_LAUNCH(bias_grad_finalize, grid_for(cols), kBlock, 0, s, partial, plan.chunks, cols, db);
}

namespace {
// 32-bit index arithmetic when every input and output index of the batch fits in an int.
bool fits_int(const PoolGeometry& g) {
  const int64_t limit = int64_t(1) << 30;
  return int64_t(g.n) * g.h * g.w * g.c < limit && int64_t(g.n) * g.oh * g.ow * g.c < limit;
}
bool tiles_exactly(const PoolGeometry& g) {
  return g.sh == g.ph && g.sw == g.pw && g.pad_top == 0 && g.pad_left == 0 && g.oh * g.sh == g.h &&
         g.ow * g.sw == g.w;
}
}  // namespace

void maxpool_forward(cudaStream_t s, const PoolGeometry& g, const float* x, float* y, int32_t* argmax) {
  const int64_t total = int64_t(g.n) * g.oh * g.ow * g.c;
  if (total <= 0) return;
  if (fits_int(g))
    TANDEM_LAUNCH(maxpool_forward_kernel<int>, grid_for(total), kBlock, 0, s, g, x, y, argmax, int(total));
  else
    TANDEM_LAUNCH(maxpool_forward_kernel<int64_t>, grid_for(total), kBlock, 0, s, g, x, y, argmax, total);
}
void maxpool_backward(cudaStream_t s, const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t total_in = int64_t(g.n) * g.h * g.w * g.c;
  if (total_in <= 0) return;
  if (tiles_exactly(g)) {
    const int64_t total = int64_t(g.n) * g.oh * g.ow * g.c;
    if (fits_int(g))
      TANDEM_LAUNCH(maxpool_backward_tiled_kernel<int>, grid_for(total), kBlock, 0, s, g, dy, argmax, dx, int(total));
    else
      TANDEM_LAUNCH(maxpool_backward_tiled_kernel<int64_t>, grid_for(total), kBlock, 0, s, g, dy, argmax, dx, total);
    return;
  }
  if (fits_int(g))
    TANDEM_LAUNCH(maxpool_backward_kernel<int>, grid_for(total_in), kBlock, 0, s, g, dy, argmax, dx, int(total_in));
  else
    TANDEM_LAUNCH(maxpool_backward_kernel<int64_t>, grid_for(total_in), kBlock, 0, s, g, dy, argmax, dx, total_in);
}

void dropout_forward(cudaStream_t s, const DropoutParams& p, const float* x, float* y, float* mask,
                     const uint64_t* counters) {
  const int64_t total = p.rows * p.cols;
  if (total <= 0) return;
  const float keep_scale = p.rate < 1.f ? 1.f / (1.f - p.rate) : 0.f;
  const uint64_t seed = p.seed ^ (p.layer * 0x9E3779B97F4A7C15ull);
  TANDEM_LAUNCH(dropout_kernel, grid_for(total), kBlock, 0, s, p.rate, seed, p.step, p.first_sample, p.cols, keep_scale,
                x, y, mask, total, counters);
}

size_t batchnorm_scratch_bytes(int64_t rows, int channels) {
  size_t red = column_reduce_scratch_bytes(rows, channels, 3);
  red = (red + 255) / 256 * 256;
  return red + sizeof(float) * 3 * size_t(std::max(channels, 1));
}

void batchnorm_forward_train(cudaStream_t s, const BatchNormParams& p, const float* x, const float* gamma,
                             const float* beta, float* moving_mean, float* moving_var, float* y, float* save_mean,
                             float* save_inv_std, void* scratch) {
  const int C = p.channels;
  if (C <= 0) return;
  const ReducePlan plan = reduce_plan(p.rows, C);
  double* partial = static_cast<double*>(scratch);
  column_partials<1>(s, SumOp{x, C}, p.rows, C, plan, partial);
  TANDEM_LAUNCH(bn_mean_finalize, grid_for(C), kBlock, 0, s, partial, plan.chunks, C, p.rows, save_mean);
  column_partials<1>(s, SquaredDeviationOp{x, save_mean, C}, p.rows, C, plan, partial);
  TANDEM_LAUNCH(bn_var_finalize, grid_for(C), kBlock, 0, s, partial, plan.chunks, C, p.rows, p.epsilon, p.momentum,
                save_mean, save_inv_std, moving_mean, moving_var);
  const int64_t total = p.rows * C;
  if (total > 0)
    TANDEM_LAUNCH(bn_normalize_kernel, grid_for(total), kBlock, 0, s, x, save_mean, save_inv_std, gamma, beta, y, total,
                  C);
}

void batchnorm_forward_infer(cudaStream_t s, const BatchNormParams& p, const float* x, const float* gamma,
                             const float* beta, const float* moving_mean, const float* moving_var, float* y) {
  const int64_t total = p.rows * p.channels;
  if (total > 0)
    TANDEM_LAUNCH(bn_infer_kernel, grid_for(total), kBlock, 0, s, x, gamma, beta, moving_mean, moving_var, p.epsilon, y,
                  total, p.channels);
}

void batchnorm_backward(cudaStream_t s, const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                        const float* save_mean, const float* save_inv_std, float* dx, float* dgamma, float* dbeta,
                        void* scratch) {
  const int C = p.channels;
  if (C <= 0) return;
  const ReducePlan plan = reduce_plan(p.rows, C);
  double* partial = static_cast<double*>(scratch);
  size_t red = (column_reduce_scratch_bytes(p.rows, C, 3) + 255) / 256 * 256;
  float* coef = reinterpret_cast<float*>(static_cast<char*>(scratch) + red);
  column_partials<3>(s, BatchNormBackwardOp{x, dy, save_mean, save_inv_std, C}, p.rows, C, plan, partial);
  TANDEM_LAUNCH(bn_backward_finalize, grid_for(C), kBlock, 0, s, partial, plan.chunks, C, p.rows, dgamma, dbeta, coef);
  const int64_t total = p.rows * C;
  if (total > 0)
    TANDEM_LAUNCH(bn_backward_dx_kernel, grid_for(total), kBlock, 0, s, x, dy, gamma, save_mean, save_inv_std, coef, dx,
                  total, C);
}

void softmax(cudaStream_t s, const float* logits, float* probs, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  constexpr int rows_per_block = kBlock / 32;
  TANDEM_LAUNCH(softmax_kernel, grid_for(rows, rows_per_block), kBlock, 0, s, logits, probs, rows, cols);
}

void softmax_cross_entropy(cudaStream_t s, const float* logits, const int32_t* labels, const float* onehot,
                           int64_t rows, int cols, float grad_scale, float* dlogits, double* metrics) {
  if (rows <= 0 || cols <= 0) return;
  TANDEM_LAUNCH(softmax_cross_entropy_kernel, 1, kLossThreads, 0, s, logits, labels, onehot, rows, cols, grad_scale,
                dlogits, metrics);
}

void gather_batch(cudaStream_t s, const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                  int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot) {
  if (rows <= 0) return;
  if (sample_elems > 0)
    TANDEM_LAUNCH(gather_images_kernel, grid_for(rows * sample_elems), kBlock, 0, s, images, index, rows, sample_elems,
                  x);
  if (labels_out || onehot)
    TANDEM_LAUNCH(gather_labels_kernel, grid_for(rows), kBlock, 0, s, labels, index, rows, num_classes, labels_out,
                  onehot);
}

void sgd_update(cudaStream_t s, const SgdParams& p, float* w, const float* g, float* velocity, size_t n,
                const float* lr_dev) {
  if (!n) return;
  if (p.momentum == 0.f)
    TANDEM_LAUNCH(sgd_plain_kernel, grid_for(int64_t(n)), kBlock, 0, s, p.lr, w, g, int64_t(n), lr_dev);
  else
    TANDEM_LAUNCH(sgd_momentum_kernel, grid_for(int64_t(n)), kBlock, 0, s, p.lr, p.momentum, p.nesterov, w, g, velocity,
                  int64_t(n), lr_dev);
}

void adam_update(cudaStream_t s, const AdamParams& p, float alpha, float* w, const float* g, float* m, float* v,
                 size_t n, const float* alpha_dev) {
  if (n)
    TANDEM_LAUNCH(adam_kernel, grid_for(int64_t(n)), kBlock, 0, s, alpha, p.beta1, p.beta2, p.epsilon, w, g, m, v,
                  int64_t(n), alpha_dev);
}

void transpose(cudaStream_t s, const float* in, float* out, int64_t rows, int64_t cols) {
  transpose_batched(s, in, out, 1, rows, cols);
}

namespace {
// Launches transpose_kernel over `batch` matrices, at most 65535 per launch (grid z).
template <bool kMask, bool kBias, bool kRelu>
void launch_transpose(cudaStream_t s, const float* in, float* out, int64_t batch, int64_t rows, int64_t cols,
                      const float* mask, const float* bias) {
  if (batch <= 0 || rows <= 0 || cols <= 0) return;
  constexpr int64_t kMaxZ = 65535;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxZ) {
    const int64_t nb = std::min(kMaxZ, batch - b0);
    const int64_t off = b0 * rows * cols;
    dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32),
              static_cast<unsigned>(nb));
    TANDEM_LAUNCH((transpose_kernel<kMask, kBias, kRelu>), grid, dim3(32, 8), 0, s, in + off, out + off, rows, cols,
                  kMask ? mask + off : nullptr, bias);
  }
}
}  // namespace

void transpose_batched(cudaStream_t s, const float* in, float* out, int64_t batch, int64_t rows, int64_t cols) {
  launch_transpose<false, false, false>(s, in, out, batch, rows, cols, nullptr, nullptr);
}

void transpose_batched_bias_relu(cudaStream_t s, const float* in, float* out, int64_t batch, int64_t rows,
                                 int64_t cols, const float* bias, bool relu) {
  if (bias && relu)
    launch_transpose<false, true, true>(s, in, out, batch, rows, cols, nullptr, bias);
  else if (bias)
    launch_transpose<false, true, false>(s, in, out, batch, rows, cols, nullptr, bias);
  else if (relu)
    launch_transpose<false, false, true>(s, in, out, batch, rows, cols, nullptr, nullptr);
  else
    launch_transpose<false, false, false>(s, in, out, batch, rows, cols, nullptr, nullptr);
}

void transpose_batched_relu_grad(cudaStream_t s, const float* dy, const float* y, float* out, int64_t batch,
                                 int64_t rows, int64_t cols) {
  launch_transpose<true, false, false>(s, dy, out, batch, rows, cols, y, nullptr);
}

size_t channel_sum_scratch_bytes(int64_t n, int k, int64_t plane) {
  const ChannelPlan plan = channel_plan(n, k, plane);
  return sizeof(double) * size_t(std::max(k, 1)) * size_t(plan.chunks);
}

void channel_sum_nchw(cudaStream_t s, const float* x, int64_t n, int k, int64_t plane, float* out, void* scratch) {
  if (k <= 0) return;
  if (n <= 0 || plane <= 0) return fill(s, out, size_t(k), 0.f);
  const ChannelPlan plan = channel_plan(n, k, plane);
  double* partial = static_cast<double*>(scratch);
  TANDEM_LAUNCH(channel_partial_kernel, dim3(static_cast<unsigned>(k), static_cast<unsigned>(plan.chunks)),
                kChannelBlock, 0, s, x, static_cast<int>(n), k, static_cast<int>(plane), plan.per, plan.chunks,
                partial);
  TANDEM_LAUNCH(channel_finalize_kernel, grid_for(k), kBlock, 0, s, partial, plan.chunks, k, out);
}

void swap_outer_inner(cudaStream_t s, const float* in, float* out, int64_t a, int64_t b, int64_t c) {
  const int64_t total = a * b * c;
  if (total > 0) TANDEM_LAUNCH(swap_outer_inner_kernel, grid_for(total), kBlock, 0, s, in, out, a, b, c, total);
}

void im2col(cudaStream_t s, const ConvGeometry& g, const float* x, int samples, float* col) {
  const int64_t total = int64_t(samples) * g.oh * g.ow * g.kh * g.kw * g.c;
  if (total > 0) TANDEM_LAUNCH(im2col_kernel, grid_for(total), kBlock, 0, s, g, x, col, total);
}

void col2im(cudaStream_t s, const ConvGeometry& g, const float* col, int samples, float* dx) {
  const int64_t total = int64_t(samples) * g.h * g.w * g.c;
  if (total > 0) TANDEM_LAUNCH(col2im_kernel, grid_for(total), kBlock, 0, s, g, col, dx, total);
}

void pad_nhwc(cudaStream_t s, const float* x, int n, int h, int w, int c, float* xp, int hp, int wp, int top,
              int left) {
  const int64_t total = int64_t(n) * hp * wp * c;
  if (total > 0) TANDEM_LAUNCH(pad_kernel, grid_for(total), kBlock, 0, s, x, h, w, c, xp, hp, wp, top, left, total);
}

void crop_nhwc(cudaStream_t s, const float* xp, int n, int hp, int wp, int c, float* x, int h, int w, int top,
               int left) {
  const int64_t total = int64_t(n) * h * w * c;
  if (total > 0) TANDEM_LAUNCH(crop_kernel, grid_for(total), kBlock, 0, s, xp, hp, wp, c, x, h, w, top, left, total);
}

}  // namespace tandem::cuda_kernels

#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#ifdef TANDEM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "engine/errors.h"
#include "engine/fp_env.h"
#include "engine/optimizer_math.h"
#include "engine/rng.h"
#include "kernels/cpu/onednn_ops.h"
#include "kernels/backends.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace tandem {

namespace {
constexpr int64_t kElementwiseChunk = 1 << 15;
constexpr size_t kIm2colBudgetFloats = size_t(4) << 20;  // 16 MiB of columns per chunk
constexpr int64_t kReduceRows = 64;                       // rows per block of a column sum
constexpr int kInvariantGemmBlock = 64;                   // rows (or columns) of C per GEMM block

// Column sums over fixed blocks of rows: row_fn(r, acc) adds row r's terms to acc[0..width).
// Each block is summed in row order and the blocks are combined in block order, so the result
// depends on neither the thread count nor how the pool splits the rows.
template <class RowFn>
std::vector<double> block_sums(ThreadPool& pool, int64_t rows, size_t width, const RowFn& row_fn) {
  const int64_t blocks = std::max<int64_t>(1, (rows + kReduceRows - 1) / kReduceRows);
  std::vector<double> partial(static_cast<size_t>(blocks) * width, 0.0);
  pool.parallel_for(blocks, [&](int64_t b, int64_t e, int) {
    for (int64_t k = b; k < e; ++k) {
      double* acc = partial.data() + static_cast<size_t>(k) * width;
      const int64_t end = std::min(rows, (k + 1) * kReduceRows);
      for (int64_t r = k * kReduceRows; r < end; ++r) row_fn(r, acc);
    }
  });
  std::vector<double> total(width, 0.0);
  for (int64_t k = 0; k < blocks; ++k) {
    const double* acc = partial.data() + static_cast<size_t>(k) * width;
    for (size_t i = 0; i < width; ++i) total[i] += acc[i];
  }
  return total;
}
}  // namespace

CpuBackend::CpuBackend(int threads) : pool_(threads) {
  enable_flush_to_zero();
  openblas_set_num_threads(pool_.size());
}

CpuBackend::~CpuBackend() = default;

void CpuBackend::set_batch_invariant(bool on) {
  invariant_ = on;
  // OpenBLAS's own threads give bits that depend on how many there are (so do its single-thread
  // kernels for small products): in batch-invariant mode it runs one thread per call, on our
  // workers, over blocks fixed by the shapes (gemm below).
  openblas_set_num_threads(on ? 1 : pool_.size());
}

void* CpuBackend::allocate(size_t bytes) {
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw_error(ErrorKind::Internal, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}
void CpuBackend::deallocate(void* p) { std::free(p); }
void CpuBackend::written(const void* p, size_t bytes) {
#ifdef TANDEM_HAVE_DNNL
  if (onednn_ && bytes) onednn_->weights_written(p, bytes);
#else
  (void)p;
  (void)bytes;
#endif
}

void CpuBackend::upload(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  written(dst, bytes);
}
void CpuBackend::download(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
  written(dst, bytes);
}
void CpuBackend::fill(float* x, size_t n, float value) {
  pool_.parallel_for(
      static_cast<int64_t>(n), [&](int64_t b, int64_t e, int) { std::fill(x + b, x + e, value); },
      kElementwiseChunk);
  written(x, sizeof(float) * n);
}

float* CpuBackend::scratch(size_t floats) {
  if (scratch_.size() < floats) scratch_.resize(floats);
  return scratch_.data();
}

void CpuBackend::gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                      int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[int64_t(i) * ldc + j] *= beta;
    return;
  }
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if (!invariant_) {
#ifdef TANDEM_HAVE_DNNL
    if (!inference_only_) {
      cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    }
    // oneDNN's OpenMP team is sized per calling thread: the backend's thread count.
    omp_set_num_threads(pool_.size());
    const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (st != dnnl_success)
      throw_error(ErrorKind::Internal, "dnnl_sgemm failed with status " + std::to_string(static_cast<int>(st)),
                  "please report this as a bug");
#else
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
    return;
  }
  // Batch-invariant: C in blocks of kInvariantGemmBlock rows (or columns, when C is wider than
  // tall), each one single-threaded OpenBLAS call on a pool worker. The blocks depend only on the
  // shapes, so the bits do not depend on the thread count.
  const bool by_rows = m >= n;
  const int dim = by_rows ? m : n;
  const int64_t blocks = (dim + kInvariantGemmBlock - 1) / kInvariantGemmBlock;
  pool_.parallel_for(blocks, [&](int64_t first, int64_t last, int) {
    for (int64_t blk = first; blk < last; ++blk) {
      const int lo = static_cast<int>(blk) * kInvariantGemmBlock, len = std::min(kInvariantGemmBlock, dim - lo);
      if (by_rows)  // rows lo.. of op(A): A's rows, or A's columns when transposed
        cblas_sgemm(CblasRowMajor, opa, opb, len, n, k, alpha, ta ? a + lo : a + int64_t(lo) * lda, lda, b, ldb,
                    beta, c + int64_t(lo) * ldc, ldc);
      else  // columns lo.. of op(B): B's columns, or B's rows when transposed
        cblas_sgemm(CblasRowMajor, opa, opb, m, len, k, alpha, a, lda, tb ? b + int64_t(lo) * ldb : b + lo, ldb,
                    beta, c + lo, ldc);
    }
  });
}

void CpuBackend::dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in,
                               int units, float* y) {
  int done = 0;
#ifdef TANDEM_HAVE_DNNL
  // Forward-only backends only, as for the convolutions: the inner product's leading rows.
  if (inference_only_ && !invariant_) {
    done = OneDnnOps::dense_rows(m, in, units);
    if (done) onednn().dense_forward(x, w, bias, relu, m, in, units, y, pool_.size());
  }
#endif
  if (done < m)  // the rest (all of it when training): GEMM, bias and ReLU as separate ops
    Backend::dense_forward(x + int64_t(done) * in, w, bias, relu, m - done, in, units, y + int64_t(done) * units);
}

#ifdef TANDEM_HAVE_DNNL
OneDnnOps& CpuBackend::onednn() {
  if (!onednn_) onednn_ = std::make_unique<OneDnnOps>();
  return *onednn_;
}
#endif

void CpuBackend::bias_add(float* y, const float* bias, int64_t rows, int cols) {
  pool_.parallel_for(
      rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r) {
          float* row = y + r * cols;
          for (int c = 0; c < cols; ++c) row[c] += bias[c];
        }
      },
      std::max<int64_t>(1, kElementwiseChunk / std::max(1, cols)));
}

void CpuBackend::bias_grad(const float* dy, float* db, int64_t rows, int cols) {
  const std::vector<double> sum = block_sums(pool_, rows, static_cast<size_t>(cols), [&](int64_t r, double* acc) {
    const float* row = dy + r * cols;
    for (int c = 0; c < cols; ++c) acc[c] += row[c];
  });
  for (int c = 0; c < cols; ++c) db[c] = static_cast<float>(sum[c]);
}

void CpuBackend::relu_forward(const float* x, float* y, size_t n) {
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
      },
      kElementwiseChunk);
}

void CpuBackend::relu_backward(const float* y, const float* dy, float* dx, size_t n) {
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
      },
      kElementwiseChunk);
}

void CpuBackend::add(float* y, const float* x, size_t n) {
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) y[i] += x[i];
      },
      kElementwiseChunk);
}

void CpuBackend::scale(float* x, size_t n, float s) {
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) x[i] *= s;
      },
      kElementwiseChunk);
}

// ---- convolution ------------------------------------------------------------------------

int CpuBackend::conv_chunk(const ConvGeometry& g) const {
  size_t per_sample = static_cast<size_t>(g.oh) * g.ow * g.kh * g.kw * g.c;
  size_t chunk = std::max<size_t>(1, kIm2colBudgetFloats / std::max<size_t>(1, per_sample));
  return static_cast<int>(std::min<size_t>(chunk, static_cast<size_t>(g.n)));
}

void CpuBackend::im2col(const ConvGeometry& g, const float* x, int samples, float* col) {
  const int64_t rows = int64_t(samples) * g.oh * g.ow;
  const int64_t kk = int64_t(g.kh) * g.kw * g.c;
  pool_.parallel_for(
      rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r) {
          int64_t s = r / (int64_t(g.oh) * g.ow);
          int rem = static_cast<int>(r % (int64_t(g.oh) * g.ow));
          int oy = rem / g.ow, ox = rem % g.ow;
          const float* xs = x + s * int64_t(g.h) * g.w * g.c;
          float* dst = col + r * kk;
          for (int ky = 0; ky < g.kh; ++ky) {
            int iy = oy * g.sh - g.pad_top + ky;
            for (int kx = 0; kx < g.kw; ++kx) {
              int ix = ox * g.sw - g.pad_left + kx;
              const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
              if (g.c == 1)  // one float: a store, not a library call (the cnn's first layer)
                *dst = inside ? xs[int64_t(iy) * g.w + ix] : 0.f;
              else if (inside)
                std::memcpy(dst, xs + (int64_t(iy) * g.w + ix) * g.c, sizeof(float) * g.c);
              else
                std::memset(dst, 0, sizeof(float) * g.c);
              dst += g.c;
            }
          }
        }
      },
      16);
}

void CpuBackend::col2im(const ConvGeometry& g, const float* col, int samples, float* dx) {
  const int64_t kk = int64_t(g.kh) * g.kw * g.c;
  const int64_t sample_in = int64_t(g.h) * g.w * g.c;
  // One sample per task: samples never share input elements, so no races and a fixed order.
  pool_.parallel_for(samples, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) {
      float* xs = dx + s * sample_in;
      std::memset(xs, 0, sizeof(float) * sample_in);
      for (int oy = 0; oy < g.oh; ++oy)
        for (int ox = 0; ox < g.ow; ++ox) {
          const float* src = col + ((s * g.oh + oy) * g.ow + ox) * kk;
          for (int ky = 0; ky < g.kh; ++ky) {
            int iy = oy * g.sh - g.pad_top + ky;
            for (int kx = 0; kx < g.kw; ++kx, src += g.c) {
              int ix = ox * g.sw - g.pad_left + kx;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              float* d = xs + (int64_t(iy) * g.w + ix) * g.c;
              for (int c = 0; c < g.c; ++c) d[c] += src[c];
            }
          }
        }
    }
  });
}

void CpuBackend::conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(false, false, g.n * g.h * g.w, g.k, g.c, 1.f, x, g.c, w, g.k, 0.f, y, g.k);
    return;
  }
  const int chunk = conv_chunk(g);
  float* col = scratch(size_t(chunk) * g.oh * g.ow * kk);
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    im2col(g, x + int64_t(s0) * g.h * g.w * g.c, ns, col);
    gemm(false, false, ns * g.oh * g.ow, g.k, kk, 1.f, col, kk, w, g.k, 0.f, y + int64_t(s0) * g.oh * g.ow * g.k,
         g.k);
  }
}

void CpuBackend::conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                                          bool relu, float* y) {
#ifdef TANDEM_HAVE_DNNL
  // Forward-only backends (served and predicting models) only: see set_inference_only.
  if (inference_only_ && !invariant_ && !g.pointwise()) {
    onednn().conv_forward(g, x, w, bias, relu, y, pool_.size());
    return;
  }
#endif
  conv2d_forward(g, x, w, y);
  if (!bias && !relu) return;
  // Bias and ReLU in one pass over y instead of two, with the bits of bias_add then relu_forward.
  const int64_t rows = int64_t(g.n) * g.oh * g.ow;
  const int k = g.k;
  pool_.parallel_for(
      rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r) {
          float* row = y + r * k;
          if (bias)
            for (int c = 0; c < k; ++c) row[c] += bias[c];
          if (relu)
            for (int c = 0; c < k; ++c) row[c] = row[c] > 0.f ? row[c] : 0.f;
        }
      },
      std::max<int64_t>(1, kElementwiseChunk / std::max(1, k)));
}

void CpuBackend::conv2d_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(false, true, g.n * g.h * g.w, g.c, g.k, 1.f, dy, g.k, w, g.k, 0.f, dx, g.c);
    return;
  }
  const int chunk = conv_chunk(g);
  float* col = scratch(size_t(chunk) * g.oh * g.ow * kk);
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    gemm(false, true, ns * g.oh * g.ow, kk, g.k, 1.f, dy + int64_t(s0) * g.oh * g.ow * g.k, g.k, w, g.k, 0.f, col,
         kk);
    col2im(g, col, ns, dx + int64_t(s0) * g.h * g.w * g.c);
  }
}

void CpuBackend::conv2d_backward_filter(const ConvGeometry& g, const float* x, const float* dy, float* dw) {
  const int kk = g.kh * g.kw * g.c;
  if (g.pointwise()) {
    gemm(true, false, g.c, g.k, g.n * g.h * g.w, 1.f, x, g.c, dy, g.k, 0.f, dw, g.k);
    return;
  }
  const int chunk = conv_chunk(g);
  float* col = scratch(size_t(chunk) * g.oh * g.ow * kk);
  for (int s0 = 0; s0 < g.n; s0 += chunk) {
    int ns = std::min(chunk, g.n - s0);
    im2col(g, x + int64_t(s0) * g.h * g.w * g.c, ns, col);
    gemm(true, false, kk, g.k, ns * g.oh * g.ow, 1.f, col, kk, dy + int64_t(s0) * g.oh * g.ow * g.k, g.k,
         s0 == 0 ? 0.f : 1.f, dw, g.k);
  }
  if (g.n == 0) fill(dw, size_t(kk) * g.k, 0.f);
}

// Forward only (no argmax to record): the maximum over the window's valid positions, channels
// innermost so the loop is one vector max per 16 channels. `x > m ? x : m` keeps the same NaN
// behaviour as the argmax loop below (the window's first valid element starts the maximum).
static void maxpool_forward_values(const PoolGeometry& g, const float* x, float* y, int64_t r) {
  const int64_t in_s = int64_t(g.h) * g.w * g.c, out_s = int64_t(g.oh) * g.ow * g.c;
  const int64_t s = r / g.oh;
  const int oy = static_cast<int>(r % g.oh);
  const float* xs = x + s * in_s;
  const int c_n = g.c;
  const int y0 = std::max(0, oy * g.sh - g.pad_top), y1 = std::min(g.h, oy * g.sh - g.pad_top + g.ph);
  for (int ox = 0; ox < g.ow; ++ox) {
    float* __restrict yo = y + s * out_s + (int64_t(oy) * g.ow + ox) * c_n;
    const int x0 = std::max(0, ox * g.sw - g.pad_left), x1 = std::min(g.w, ox * g.sw - g.pad_left + g.pw);
    if (y0 >= y1 || x0 >= x1) {  // a window entirely in the padding
      for (int c = 0; c < c_n; ++c) yo[c] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float* __restrict first = xs + (int64_t(y0) * g.w + x0) * c_n;
    for (int c = 0; c < c_n; ++c) yo[c] = first[c];
    for (int iy = y0; iy < y1; ++iy)
      for (int ix = (iy == y0 ? x0 + 1 : x0); ix < x1; ++ix) {
        const float* __restrict xv = xs + (int64_t(iy) * g.w + ix) * c_n;
        for (int c = 0; c < c_n; ++c) yo[c] = xv[c] > yo[c] ? xv[c] : yo[c];
      }
  }
}

void CpuBackend::maxpool_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax) {
  if (!argmax) {
    pool_.parallel_for(int64_t(g.n) * g.oh, [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) maxpool_forward_values(g, x, y, r);
    });
    return;
  }
  const int64_t in_s = int64_t(g.h) * g.w * g.c, out_s = int64_t(g.oh) * g.ow * g.c;
  pool_.parallel_for(int64_t(g.n) * g.oh, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      int64_t s = r / g.oh;
      int oy = static_cast<int>(r % g.oh);
      const float* xs = x + s * in_s;
      for (int ox = 0; ox < g.ow; ++ox) {
        float* yo = y + s * out_s + (int64_t(oy) * g.ow + ox) * g.c;
        int32_t* ao = argmax + s * out_s + (int64_t(oy) * g.ow + ox) * g.c;
        bool first = true;  // the window's first valid element starts the maximum (a NaN there stays)
        for (int ky = 0; ky < g.ph; ++ky) {
          int iy = oy * g.sh - g.pad_top + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (int kx = 0; kx < g.pw; ++kx) {
            int ix = ox * g.sw - g.pad_left + kx;
            if (ix < 0 || ix >= g.w) continue;
            const int32_t base = (iy * g.w + ix) * g.c;
            const float* xv = xs + base;
            if (first) {
              for (int c = 0; c < g.c; ++c) {
                yo[c] = xv[c];
                ao[c] = base + c;
              }
              first = false;
              continue;
            }
            for (int c = 0; c < g.c; ++c) {  // branch-free, so the channel loop vectorizes
              const bool take = xv[c] > yo[c];
              yo[c] = take ? xv[c] : yo[c];
              ao[c] = take ? base + c : ao[c];
            }
          }
        }
        if (first)  // a window entirely in the padding
          for (int c = 0; c < g.c; ++c) {
            yo[c] = -std::numeric_limits<float>::infinity();
            ao[c] = -1;
          }
      }
    }
  });
}

void CpuBackend::maxpool_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t in_s = int64_t(g.h) * g.w * g.c, out_s = int64_t(g.oh) * g.ow * g.c;
  pool_.parallel_for(g.n, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) {
      float* d = dx + s * in_s;
      std::memset(d, 0, sizeof(float) * in_s);
      const float* go = dy + s * out_s;
      const int32_t* ao = argmax + s * out_s;
      for (int64_t i = 0; i < out_s; ++i)
        if (ao[i] >= 0) d[ao[i]] += go[i];
    }
  });
}

// ---- dropout and batch normalisation ------------------------------------------------------

void CpuBackend::dropout_forward(const DropoutParams& p, const float* x, float* y, float* mask) {
  const float keep_scale = p.rate < 1.f ? 1.f / (1.f - p.rate) : 0.f;
  const uint64_t seed = p.seed ^ (p.layer * 0x9E3779B97F4A7C15ull);
  pool_.parallel_for(p.rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t c = 0; c < p.cols; ++c) {
        int64_t i = r * p.cols + c;
        float m = dropout_keep(seed, p.step, p.first_sample + r, c, p.rate) ? keep_scale : 0.f;
        mask[i] = m;
        y[i] = x[i] * m;
      }
  });
}

void CpuBackend::multiply(const float* a, const float* b, float* y, size_t n) {
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t lo, int64_t hi, int) {
        for (int64_t i = lo; i < hi; ++i) y[i] = a[i] * b[i];
      },
      kElementwiseChunk);
}

void CpuBackend::batchnorm_forward_train(const BatchNormParams& p, const float* x, const float* gamma,
                                         const float* beta, float* moving_mean, float* moving_var, float* y,
                                         float* save_mean, float* save_inv_std) {
  const int C = p.channels;
  const size_t width = static_cast<size_t>(C);
  const std::vector<double> sum = block_sums(pool_, p.rows, width, [&](int64_t r, double* acc) {
    for (int c = 0; c < C; ++c) acc[c] += x[r * C + c];
  });
  std::vector<float> mean(C);
  for (int c = 0; c < C; ++c) mean[c] = p.rows ? static_cast<float>(sum[c] / double(p.rows)) : 0.f;
  const std::vector<double> sq = block_sums(pool_, p.rows, width, [&](int64_t r, double* acc) {
    for (int c = 0; c < C; ++c) {
      double d = double(x[r * C + c]) - mean[c];
      acc[c] += d * d;
    }
  });
  for (int c = 0; c < C; ++c) {
    float var = p.rows ? static_cast<float>(sq[c] / double(p.rows)) : 0.f;
    save_mean[c] = mean[c];
    save_inv_std[c] = 1.f / std::sqrt(var + p.epsilon);
    moving_mean[c] = moving_mean[c] * p.momentum + mean[c] * (1.f - p.momentum);
    moving_var[c] = moving_var[c] * p.momentum + var * (1.f - p.momentum);
  }
  pool_.parallel_for(
      p.rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r)
          for (int c = 0; c < C; ++c)
            y[r * C + c] = (x[r * C + c] - save_mean[c]) * save_inv_std[c] * gamma[c] + beta[c];
      },
      64);
}

void CpuBackend::batchnorm_forward_infer(const BatchNormParams& p, const float* x, const float* gamma,
                                         const float* beta, const float* moving_mean, const float* moving_var,
                                         float* y) {
  const int C = p.channels;
  std::vector<float> a(C), b0(C);
  for (int c = 0; c < C; ++c) {
    a[c] = gamma[c] / std::sqrt(moving_var[c] + p.epsilon);
    b0[c] = beta[c] - moving_mean[c] * a[c];
  }
  pool_.parallel_for(
      p.rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r)
          for (int c = 0; c < C; ++c) y[r * C + c] = x[r * C + c] * a[c] + b0[c];
      },
      64);
}

void CpuBackend::batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma,
                                    const float* save_mean, const float* save_inv_std, float* dx, float* dgamma,
                                    float* dbeta) {
  // xhat is centred once more on its own mean: with a float batch mean, sum(xhat) is not exactly
  // zero, and without this the gradient of a bias feeding the normalisation (exactly zero in
  // theory) picks up a systematic error that grows with the number of rows.
  const int C = p.channels;
  // Per channel: sum dy, sum dy*xhat, sum xhat.
  const std::vector<double> acc = block_sums(pool_, p.rows, size_t(C) * 3, [&](int64_t r, double* a) {
    for (int c = 0; c < C; ++c) {
      double g = dy[r * C + c];
      double xhat = (double(x[r * C + c]) - save_mean[c]) * save_inv_std[c];
      a[c] += g;
      a[C + c] += g * xhat;
      a[2 * C + c] += xhat;
    }
  });
  std::vector<float> mdy(C), mdyx(C), mx(C);
  const double n = double(std::max<int64_t>(p.rows, 1));
  for (int c = 0; c < C; ++c) {
    const double sdy = acc[c], sdyx = acc[C + c], sx = acc[2 * C + c];
    dbeta[c] = static_cast<float>(sdy);
    dgamma[c] = static_cast<float>(sdyx);
    mdy[c] = static_cast<float>(sdy / n);
    mx[c] = static_cast<float>(sx / n);
    mdyx[c] = static_cast<float>((sdyx - sx / n * sdy) / n);
  }
  pool_.parallel_for(
      p.rows,
      [&](int64_t b, int64_t e, int) {
        for (int64_t r = b; r < e; ++r)
          for (int c = 0; c < C; ++c) {
            float xhat = (x[r * C + c] - save_mean[c]) * save_inv_std[c] - mx[c];
            dx[r * C + c] = gamma[c] * save_inv_std[c] * (dy[r * C + c] - mdy[c] - xhat * mdyx[c]);
          }
      },
      64);
}

// ---- output, loss, data, optimizers ----------------------------------------------------------

void CpuBackend::softmax(const float* logits, float* probs, int64_t rows, int cols) {
  pool_.parallel_for(rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      const float* z = logits + r * cols;
      float* p = probs + r * cols;
      float mx = *std::max_element(z, z + cols);
      double s = 0;
      for (int c = 0; c < cols; ++c) s += std::exp(double(z[c]) - mx);
      for (int c = 0; c < cols; ++c) p[c] = static_cast<float>(std::exp(double(z[c]) - mx) / s);
    }
  });
}

void CpuBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* onehot, int64_t rows,
                                       int cols, float grad_scale, float* dlogits, double* metrics) {
  // Sequential over rows: the loss sum must not depend on the thread count.
  double loss = 0, correct = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * cols;
    int best = 0;
    for (int c = 1; c < cols; ++c)
      if (z[c] > z[best]) best = c;
    double mx = z[best], s = 0;
    for (int c = 0; c < cols; ++c) s += std::exp(double(z[c]) - mx);
    double lse = mx + std::log(s);
    int target;
    if (onehot) {
      const float* t = onehot + r * cols;
      double l = 0;
      target = 0;
      for (int c = 0; c < cols; ++c) {
        l += double(t[c]) * (lse - z[c]);
        if (t[c] > t[target]) target = c;
      }
      loss += l;
    } else {
      target = labels[r];
      loss += lse - z[target];
    }
    if (best == target) correct += 1;
    if (dlogits) {
      float* d = dlogits + r * cols;
      for (int c = 0; c < cols; ++c) {
        double p = std::exp(double(z[c]) - lse);
        double t = onehot ? onehot[r * cols + c] : (c == target ? 1.0 : 0.0);
        d[c] = static_cast<float>((p - t) * grad_scale);
      }
    }
  }
  metrics[0] += loss;
  metrics[1] += correct;
}

void CpuBackend::gather_batch(const uint8_t* images, const uint8_t* labels, const int32_t* index, int64_t rows,
                              int64_t sample_elems, int num_classes, float* x, int32_t* labels_out, float* onehot) {
  pool_.parallel_for(rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r) {
      const uint8_t* src = images + int64_t(index[r]) * sample_elems;
      float* dst = x + r * sample_elems;
      for (int64_t i = 0; i < sample_elems; ++i) dst[i] = src[i] / 255.0f;
      int32_t label = labels[index[r]];
      if (labels_out) labels_out[r] = label;
      if (onehot)
        for (int c = 0; c < num_classes; ++c) onehot[r * num_classes + c] = c == label ? 1.f : 0.f;
    }
  });
}

void CpuBackend::sgd_update(const SgdParams& p, float* w, const float* g, float* velocity, size_t n) {
  namespace om = optimizer_math;
  written(w, sizeof(float) * n);
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        if (p.momentum == 0.f) {
          for (int64_t i = b; i < e; ++i) om::sgd(p.lr, w[i], g[i]);
          return;
        }
        for (int64_t i = b; i < e; ++i) om::sgd_momentum(p.lr, p.momentum, p.nesterov, w[i], g[i], velocity[i]);
      },
      kElementwiseChunk);
}

void CpuBackend::adam_update(const AdamParams& p, float* w, const float* g, float* m, float* v, size_t n) {
  namespace om = optimizer_math;
  written(w, sizeof(float) * n);
  const float alpha = om::adam_step_size(p.lr, p.beta1, p.beta2, p.step);
  const float one_b1 = 1.f - p.beta1, one_b2 = 1.f - p.beta2;
  pool_.parallel_for(
      static_cast<int64_t>(n),
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) om::adam(alpha, one_b1, one_b2, p.epsilon, w[i], g[i], m[i], v[i]);
      },
      kElementwiseChunk);
}

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace tandem

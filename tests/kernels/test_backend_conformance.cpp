// Backend conformance: every Backend op, on every backend present, against the CPU oracle
// (a one-thread CpuBackend), with fresh random inputs each run (the seed is printed; set
// TANDEM_TEST_SEED to repeat a run) and output buffers poisoned with NaN before each op.
//
// Each op has two test cases:
//   "conformance: <op>"                [gpu]  the CUDA backend (gpu:0) against the oracle. Without a
//                                              GPU it prints "SKIPPED: no GPU" and exits with 77
//                                              (ctest: skipped) when run on its own, as ctest does.
//   "conformance (cpu threads): <op>"  [cpu]  a 3-thread CpuBackend against the oracle, so the
//                                              checks themselves run on every machine.
// Whole-model checks (one training step of the mlp and cnn presets, two Trainer steps, dropout
// masks) and GPU-only checks (TF32 mode, out-of-memory and device errors) follow the op checks.
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/errors.h"
#include "engine/optimizer.h"
#include "engine/replica.h"
#include "engine/rng.h"
#include "engine/trainer.h"
#include "gpu_support.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;
using tandem::test::gpu_count;
using tandem::test::gpu_or_skip;
using tandem::test::make_gpu_backend;

namespace {

// ---- seeds, skipping, backends -------------------------------------------------------------------

uint64_t run_seed() {
  static const uint64_t seed = [] {
    uint64_t s;
    if (const char* e = std::getenv("TANDEM_TEST_SEED"); e && *e)
      s = std::strtoull(e, nullptr, 10);
    else
      s = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007ull;
    std::printf("backend conformance: seed %llu (rerun with TANDEM_TEST_SEED=%llu)\n",
                static_cast<unsigned long long>(s), static_cast<unsigned long long>(s));
    std::fflush(stdout);
    return s;
  }();
  return seed;
}

uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

struct Rand {
  CounterRng rng;
  explicit Rand(uint64_t stream) : rng(run_seed(), stream) {}
  float uni(float lo, float hi) { return lo + (hi - lo) * rng.uniform(); }
  int range(int lo, int hi) { return lo + static_cast<int>(rng.below(static_cast<uint64_t>(hi - lo + 1))); }
  std::vector<float> vec(size_t n, float lo = -1.f, float hi = 1.f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uni(lo, hi);
    return v;
  }
  // Values from a small set, so that ties and exact zeros are common.
  std::vector<float> coarse(size_t n, int levels) {
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(range(-levels, levels)) * 0.25f;
    return v;
  }
};

using Check = std::function<void(Backend& ref, Backend& dut, Rand& r)>;

// The candidate backends of a [gpu] case: gpu:0. Runs `check` against a fresh 1-thread oracle.
void run_gpu(const std::string& op, const Check& check) {
  if (!gpu_or_skip()) return;
  auto oracle = make_cpu_backend(1);
  auto gpu = make_gpu_backend();
  REQUIRE(gpu);
  Rand r(name_hash(op));
  INFO("op " << op << ", backend " << gpu->name() << " " << gpu->device().str() << ", seed " << run_seed());
  check(*oracle, *gpu, r);
  gpu->synchronize();
}

void run_cpu_threads(const std::string& op, const Check& check) {
  auto oracle = make_cpu_backend(1);
  auto cpu3 = make_cpu_backend(3);
  Rand r(name_hash(op));
  INFO("op " << op << ", backend cpu (3 threads), seed " << run_seed());
  check(*oracle, *cpu3, r);
}

#define CONFORMANCE_CASES(op, fn)                                          \
  TEST_CASE("conformance: " op, "[gpu][conformance]") { run_gpu(op, fn); } \
  TEST_CASE("conformance (cpu threads): " op, "[cpu][conformance]") { run_cpu_threads(op, fn); }

// ---- buffers ------------------------------------------------------------------------------------

class DevBuf {
 public:
  DevBuf(Backend& b, size_t bytes) : b_(&b), bytes_(bytes), p_(b.allocate(bytes)) {}
  ~DevBuf() { b_->deallocate(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  float* f() { return static_cast<float*>(p_); }
  int32_t* i32() { return static_cast<int32_t*>(p_); }
  uint8_t* u8() { return static_cast<uint8_t*>(p_); }
  double* f64() { return static_cast<double*>(p_); }
  void* raw() { return p_; }
  template <class T>
  void put(const std::vector<T>& v) {
    REQUIRE(v.size() * sizeof(T) <= bytes_);
    b_->upload(p_, v.data(), v.size() * sizeof(T));
  }
  template <class T>
  std::vector<T> get(size_t n) {
    REQUIRE(n * sizeof(T) <= bytes_);
    std::vector<T> v(n);
    b_->download(v.data(), p_, n * sizeof(T));
    return v;
  }

 private:
  Backend* b_;
  size_t bytes_;
  void* p_;
};

// The same buffer on the oracle (r) and on the backend under test (d).
struct Twin {
  DevBuf r, d;
  Twin(Backend& ref, Backend& dut, size_t bytes)
      : r(ref, std::max<size_t>(bytes, 4)), d(dut, std::max<size_t>(bytes, 4)) {}
  template <class T>
  void put(const std::vector<T>& v) {
    r.put(v);
    d.put(v);
  }
  void poison(size_t floats) { put(std::vector<float>(floats, std::numeric_limits<float>::quiet_NaN())); }
  void poison_i32(size_t n) { put(std::vector<int32_t>(n, -7777777)); }
};

struct Tol {
  double atol = 0, rtol = 0;
};
constexpr Tol kExact{0, 0};

// Every element within atol + rtol * |ref|; NaN anywhere (an unwritten, poisoned output) fails.
void expect_close(const std::vector<float>& ref, const std::vector<float>& got, Tol t, const std::string& what) {
  REQUIRE(ref.size() == got.size());
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double a = ref[i], b = got[i];
    bool ok;
    if (std::isnan(a) || std::isnan(b))
      ok = false;
    else if (std::isinf(a) || std::isinf(b))
      ok = a == b;
    else {
      double err = std::fabs(a - b);
      ok = err <= t.atol + t.rtol * std::fabs(a);
      worst = std::max(worst, err);
    }
    if (!ok && bad++ == 0) first = i;
  }
  INFO(what << ": " << bad << " of " << ref.size() << " elements differ (atol " << t.atol << ", rtol " << t.rtol
            << "); worst |diff| " << worst
            << (bad ? "; first at " + std::to_string(first) + ": oracle " + std::to_string(ref[first]) + " got " +
                          std::to_string(got[first])
                    : std::string()));
  CHECK(bad == 0);
}

void expect_twin(Twin& t, size_t n, Tol tol, const std::string& what) {
  expect_close(t.r.get<float>(n), t.d.get<float>(n), tol, what);
}

void expect_equal_i32(const std::vector<int32_t>& ref, const std::vector<int32_t>& got, const std::string& what) {
  REQUIRE(ref.size() == got.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (ref[i] != got[i] && bad++ == 0) first = i;
  INFO(what << ": " << bad << " of " << ref.size() << " differ"
            << (bad ? "; first at " + std::to_string(first) + ": oracle " + std::to_string(ref[first]) + " got " +
                          std::to_string(got[first])
                    : std::string()));
  CHECK(bad == 0);
}

// Relative error in the 2-norm, for whole-model results where rare ReLU/max-pool flips are allowed.
double rel_norm_error(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(ref[i])) return std::numeric_limits<double>::infinity();
    double d = double(ref[i]) - got[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// A reduction of length k over inputs of magnitude ~1, in fp32 with any summation order.
Tol sum_tol(int64_t k) { return Tol{2e-6 * std::sqrt(double(std::max<int64_t>(k, 1))) + 1e-6, 2e-5}; }

// ---- memory ops ---------------------------------------------------------------------------------

void check_memory(Backend& ref, Backend& dut, Rand& r) {
  // Round trips of odd sizes, below and above the GPU's pinned-staging threshold (1 MiB).
  for (size_t bytes :
       {size_t(1), size_t(7), size_t(4096 + 3), size_t(1 << 20), size_t((1 << 20) + 5), size_t(3 << 20)}) {
    std::vector<uint8_t> host(bytes);
    for (auto& b : host) b = static_cast<uint8_t>(r.range(0, 255));
    DevBuf buf(dut, bytes);
    buf.put(host);
    INFO("round trip of " << bytes << " bytes");
    CHECK(buf.get<uint8_t>(bytes) == host);
  }
  // Zero-byte transfers are no-ops.
  {
    DevBuf buf(dut, 16);
    std::vector<float> v{1, 2, 3, 4};
    buf.put(v);
    dut.upload(buf.raw(), nullptr, 0);
    dut.copy(buf.raw(), buf.raw(), 0);
    CHECK(buf.get<float>(4) == v);
  }
  // The caller's buffer may be reused as soon as upload returns (many small uploads in a row).
  {
    const int n = 16;
    std::vector<std::unique_ptr<DevBuf>> bufs;
    std::vector<std::vector<int32_t>> expect;
    std::vector<int32_t> host(257);
    for (int i = 0; i < n; ++i) {
      for (auto& x : host) x = r.range(-1000, 1000);
      bufs.push_back(std::make_unique<DevBuf>(dut, host.size() * 4));
      bufs.back()->put(host);
      expect.push_back(host);
    }
    for (int i = 0; i < n; ++i) CHECK(bufs[i]->get<int32_t>(host.size()) == expect[i]);
  }
  // fill, copy (disjoint and overlapping, memmove semantics).
  const size_t n = static_cast<size_t>(r.range(1, 100000));
  const float value = r.uni(-3, 3);
  Twin a(ref, dut, n * 4);
  a.poison(n);
  ref.fill(a.r.f(), n, value);
  dut.fill(a.d.f(), n, value);
  expect_twin(a, n, kExact, "fill");
  ref.fill(a.r.f(), 0, 1.f);
  dut.fill(a.d.f(), 0, 1.f);
  expect_twin(a, n, kExact, "fill of 0 elements");

  std::vector<float> src = r.vec(n);
  Twin s(ref, dut, n * 4), d(ref, dut, n * 4);
  s.put(src);
  d.poison(n);
  ref.copy(d.r.f(), s.r.f(), n * 4);
  dut.copy(d.d.f(), s.d.f(), n * 4);
  expect_twin(d, n, kExact, "copy");
  for (int dir = 0; dir < 2; ++dir) {
    const size_t shift = static_cast<size_t>(r.range(1, static_cast<int>(std::max<size_t>(1, n / 3))));
    if (shift >= n) continue;
    const size_t len = n - shift;
    Twin m(ref, dut, n * 4);
    m.put(src);
    float* rs = dir ? m.r.f() : m.r.f() + shift;
    float* rd = dir ? m.r.f() + shift : m.r.f();
    float* ds = dir ? m.d.f() : m.d.f() + shift;
    float* dd = dir ? m.d.f() + shift : m.d.f();
    ref.copy(rd, rs, len * 4);
    dut.copy(dd, ds, len * 4);
    expect_twin(m, n, kExact, dir ? "overlapping copy to a higher address" : "overlapping copy to a lower address");
  }
  dut.synchronize();
}

// ---- dense algebra ------------------------------------------------------------------------------

void one_gemm(Backend& ref, Backend& dut, Rand& r, bool ta, bool tb, int m, int n, int k, float alpha, float beta,
              Tol tol) {
  const int lda = (ta ? m : k) + r.range(0, 3), ldb = (tb ? k : n) + r.range(0, 3), ldc = n + r.range(0, 3);
  const size_t a_n = size_t(ta ? k : m) * lda, b_n = size_t(tb ? n : k) * ldb, c_n = size_t(m) * ldc;
  Twin a(ref, dut, a_n * 4), b(ref, dut, b_n * 4), c(ref, dut, c_n * 4);
  a.put(r.vec(a_n));
  b.put(r.vec(b_n));
  // beta == 0: C is not read (poisoned); otherwise C holds values to blend. Padding columns of C
  // must stay untouched.
  std::vector<float> c0 = r.vec(c_n);
  if (beta == 0.f)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c0[size_t(i) * ldc + j] = std::numeric_limits<float>::quiet_NaN();
  c.put(c0);
  ref.gemm(ta, tb, m, n, k, alpha, a.r.f(), lda, b.r.f(), ldb, beta, c.r.f(), ldc);
  dut.gemm(ta, tb, m, n, k, alpha, a.d.f(), lda, b.d.f(), ldb, beta, c.d.f(), ldc);
  INFO("gemm ta=" << ta << " tb=" << tb << " m=" << m << " n=" << n << " k=" << k << " lda=" << lda << " ldb=" << ldb
                  << " ldc=" << ldc << " alpha=" << alpha << " beta=" << beta);
  expect_twin(c, c_n, tol, "C");
}

void check_gemm(Backend& ref, Backend& dut, Rand& r) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      int m = r.range(1, 200), n = r.range(1, 200), k = r.range(1, 300);
      one_gemm(ref, dut, r, ta, tb, m, n, k, 1.f, 0.f, sum_tol(k));
      one_gemm(ref, dut, r, ta, tb, m, n, k, r.uni(-2, 2), r.uni(-1, 1), sum_tol(k));
    }
  // The shapes the mlp preset runs (forward, weight gradient, input gradient) at batch 256.
  one_gemm(ref, dut, r, false, false, 256, 300, 784, 1.f, 0.f, sum_tol(784));
  one_gemm(ref, dut, r, true, false, 784, 300, 256, 1.f, 0.f, sum_tol(256));
  one_gemm(ref, dut, r, false, true, 256, 784, 300, 1.f, 0.f, sum_tol(300));
  // Degenerate sizes: k == 0 scales C by beta; m or n == 0 does nothing.
  one_gemm(ref, dut, r, false, false, 7, 5, 0, 1.f, 0.5f, kExact);
  {
    Twin c(ref, dut, 64);
    std::vector<float> c0 = r.vec(16);
    c.put(c0);
    ref.gemm(false, false, 0, 4, 3, 1.f, c.r.f(), 3, c.r.f(), 4, 0.f, c.r.f(), 4);
    dut.gemm(false, false, 0, 4, 3, 1.f, c.d.f(), 3, c.d.f(), 4, 0.f, c.d.f(), 4);
    CHECK(c.d.get<float>(16) == c0);
  }
}

void check_bias(Backend& ref, Backend& dut, Rand& r) {
  const int shapes[][2] = {
      {1, 1}, {r.range(1, 64), r.range(1, 40)}, {256, 300}, {r.range(1000, 20000), r.range(1, 130)}, {25088, 64}};
  for (auto& s : shapes) {
    const int64_t rows = s[0];
    const int cols = s[1];
    INFO("rows " << rows << " cols " << cols);
    Twin y(ref, dut, size_t(rows) * cols * 4), bias(ref, dut, size_t(cols) * 4), db(ref, dut, size_t(cols) * 4);
    y.put(r.vec(size_t(rows) * cols));
    bias.put(r.vec(cols));
    ref.bias_add(y.r.f(), bias.r.f(), rows, cols);
    dut.bias_add(y.d.f(), bias.d.f(), rows, cols);
    expect_twin(y, size_t(rows) * cols, kExact, "bias_add");
    y.put(r.vec(size_t(rows) * cols));
    db.poison(cols);
    ref.bias_grad(y.r.f(), db.r.f(), rows, cols);
    dut.bias_grad(y.d.f(), db.d.f(), rows, cols);
    expect_twin(db, cols, Tol{1e-6, 1e-6}, "bias_grad");
  }
  // No rows: the gradient is zero.
  Twin dy(ref, dut, 16), db(ref, dut, 5 * 4);
  db.poison(5);
  ref.bias_grad(dy.r.f(), db.r.f(), 0, 5);
  dut.bias_grad(dy.d.f(), db.d.f(), 0, 5);
  expect_twin(db, 5, kExact, "bias_grad over 0 rows");
}

void check_elementwise(Backend& ref, Backend& dut, Rand& r) {
  for (size_t n : {size_t(1), size_t(r.range(2, 1000)), size_t(r.range(100000, 3000000))}) {
    INFO("n " << n);
    std::vector<float> xv = r.coarse(n, 8);  // many exact zeros
    for (size_t i = 0; i < n; i += 3) xv[i] = r.uni(-1, 1);
    Twin x(ref, dut, n * 4), y(ref, dut, n * 4), dy(ref, dut, n * 4), dx(ref, dut, n * 4);
    x.put(xv);
    y.poison(n);
    ref.relu_forward(x.r.f(), y.r.f(), n);
    dut.relu_forward(x.d.f(), y.d.f(), n);
    expect_twin(y, n, kExact, "relu_forward");
    dy.put(r.vec(n));
    dx.poison(n);
    ref.relu_backward(y.r.f(), dy.r.f(), dx.r.f(), n);
    dut.relu_backward(y.d.f(), dy.d.f(), dx.d.f(), n);
    expect_twin(dx, n, kExact, "relu_backward");
    // In place, as Dense/Conv2D use them (y = relu(y); dy = relu'(y) * dy).
    dut.relu_forward(x.d.f(), x.d.f(), n);
    expect_close(y.r.get<float>(n), x.d.get<float>(n), kExact, "relu_forward in place");
    dut.relu_backward(y.d.f(), dy.d.f(), dy.d.f(), n);
    expect_close(dx.r.get<float>(n), dy.d.get<float>(n), kExact, "relu_backward in place");

    Twin a(ref, dut, n * 4), b(ref, dut, n * 4), out(ref, dut, n * 4);
    a.put(r.vec(n, -4, 4));
    b.put(r.vec(n, -4, 4));
    ref.add(a.r.f(), b.r.f(), n);
    dut.add(a.d.f(), b.d.f(), n);
    expect_twin(a, n, kExact, "add");
    const float s = r.uni(-3, 3);
    ref.scale(a.r.f(), n, s);
    dut.scale(a.d.f(), n, s);
    expect_twin(a, n, kExact, "scale");
    out.poison(n);
    ref.multiply(a.r.f(), b.r.f(), out.r.f(), n);
    dut.multiply(a.d.f(), b.d.f(), out.d.f(), n);
    expect_twin(out, n, kExact, "multiply");
  }
}

// ---- convolution and pooling ----------------------------------------------------------------------

ConvGeometry conv_geometry(int n, int h, int w, int c, int kh, int kw, int k, int sh, int sw, bool same) {
  ConvGeometry g;
  g.n = n;
  g.h = h;
  g.w = w;
  g.c = c;
  g.kh = kh;
  g.kw = kw;
  g.k = k;
  g.sh = sh;
  g.sw = sw;
  if (same) {  // as TensorFlow: the odd extra padding row/column goes at the end
    g.oh = (h + sh - 1) / sh;
    g.ow = (w + sw - 1) / sw;
    g.pad_top = std::max((g.oh - 1) * sh + kh - h, 0) / 2;
    g.pad_left = std::max((g.ow - 1) * sw + kw - w, 0) / 2;
  } else {
    g.oh = (h - kh) / sh + 1;
    g.ow = (w - kw) / sw + 1;
  }
  return g;
}

std::string describe(const ConvGeometry& g) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "conv n=%d in=%dx%dx%d kernel=%dx%d k=%d stride=%dx%d pad=%d,%d out=%dx%d", g.n, g.h,
                g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left, g.oh, g.ow);
  return buf;
}

std::vector<ConvGeometry> conv_cases(Rand& r) {
  std::vector<ConvGeometry> v = {
      conv_geometry(4, 28, 28, 1, 7, 7, 64, 1, 1, true),     // cnn conv2d
      conv_geometry(3, 14, 14, 64, 3, 3, 128, 1, 1, true),   // cnn conv2d_1
      conv_geometry(2, 14, 14, 128, 3, 3, 128, 1, 1, true),  // cnn conv2d_2
      conv_geometry(3, 6, 6, 2, 3, 2, 4, 2, 2, true),        // asymmetric "same" padding, strided
      conv_geometry(2, 9, 8, 3, 2, 2, 5, 1, 1, true),        // even kernel: pad only at the end
      conv_geometry(2, 7, 9, 3, 3, 3, 4, 2, 3, false),       // valid, strided, leftover rows
      conv_geometry(3, 5, 5, 6, 1, 1, 7, 1, 1, false),       // pointwise
      conv_geometry(2, 8, 8, 3, 8, 8, 2, 1, 1, false),       // kernel covers the input
  };
  for (int i = 0; i < 2; ++i) {
    int kh = r.range(1, 5), kw = r.range(1, 5);
    int h = r.range(kh, 16), w = r.range(kw, 16);
    v.push_back(conv_geometry(r.range(1, 4), h, w, r.range(1, 9), kh, kw, r.range(1, 9), r.range(1, 3), r.range(1, 3),
                              r.range(0, 1) == 1));
  }
  return v;
}

// On the GPU, cuDNN may run a convolution as an FFT or Winograd transform (chosen by timing); the
// fp32 error of those scales with the output's overall magnitude, not each element's, so the GPU
// is also allowed 2e-4 of the reference output's RMS (direct summation stays within sum_tol).
Tol conv_tol(const Backend& dut, int64_t k, Twin& t, size_t n) {
  Tol tol = sum_tol(k);
  if (dut.device().kind != DeviceKind::Gpu || n == 0) return tol;
  double ss = 0;
  for (float v : t.r.get<float>(n)) ss += double(v) * v;
  tol.atol += 2e-4 * std::sqrt(ss / double(n));
  return tol;
}

void check_conv(Backend& ref, Backend& dut, Rand& r) {
  for (const ConvGeometry& g : conv_cases(r)) {
    INFO(describe(g));
    const size_t xn = size_t(g.n) * g.h * g.w * g.c, wn = size_t(g.kh) * g.kw * g.c * g.k,
                 yn = size_t(g.n) * g.oh * g.ow * g.k;
    Twin x(ref, dut, xn * 4), w(ref, dut, wn * 4), y(ref, dut, yn * 4), dy(ref, dut, yn * 4), dx(ref, dut, xn * 4),
        dw(ref, dut, wn * 4);
    x.put(r.vec(xn));
    w.put(r.vec(wn));
    dy.put(r.vec(yn));
    y.poison(yn);
    dx.poison(xn);
    dw.poison(wn);
    ref.conv2d_forward(g, x.r.f(), w.r.f(), y.r.f());
    dut.conv2d_forward(g, x.d.f(), w.d.f(), y.d.f());
    expect_twin(y, yn, conv_tol(dut, int64_t(g.kh) * g.kw * g.c, y, yn), "conv2d_forward");
    ref.conv2d_backward_data(g, dy.r.f(), w.r.f(), dx.r.f());
    dut.conv2d_backward_data(g, dy.d.f(), w.d.f(), dx.d.f());
    expect_twin(dx, xn, conv_tol(dut, int64_t(g.kh) * g.kw * g.k, dx, xn), "conv2d_backward_data");
    ref.conv2d_backward_filter(g, x.r.f(), dy.r.f(), dw.r.f());
    dut.conv2d_backward_filter(g, x.d.f(), dy.d.f(), dw.d.f());
    expect_twin(dw, wn, conv_tol(dut, int64_t(g.n) * g.oh * g.ow, dw, wn), "conv2d_backward_filter");
    // A second call of the same geometry reuses the cached algorithm and must give the same answer.
    y.poison(yn);
    dut.conv2d_forward(g, x.d.f(), w.d.f(), y.d.f());
    ref.conv2d_forward(g, x.r.f(), w.r.f(), y.r.f());
    expect_twin(y, yn, conv_tol(dut, int64_t(g.kh) * g.kw * g.c, y, yn), "conv2d_forward (cached plan)");
  }
}

// A Conv2D layer's fused call (convolution, bias, ReLU; and its backward) against the oracle
// running the same math as separate ops. The backward runs twice: on the GPU the first call of a
// shape searches the algorithms through the separate ops, later ones take the fused path. On
// the device itself the fused path must equal its own separate ops bit for bit (the bias gradient,
// summed in another order, to rounding).
void check_conv_fused(Backend& ref, Backend& dut, Rand& r) {
  std::vector<ConvGeometry> cases = {
      conv_geometry(4, 28, 28, 1, 7, 7, 64, 1, 1, true),    // cnn conv2d (first layer: no dx)
      conv_geometry(3, 14, 14, 64, 3, 3, 128, 1, 1, true),  // cnn conv2d_1
      conv_geometry(3, 6, 6, 2, 3, 2, 4, 2, 2, true),       // asymmetric "same" padding, strided
      conv_geometry(2, 7, 9, 3, 3, 3, 4, 2, 3, false),      // valid, strided, leftover rows
  };
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const ConvGeometry& g = cases[ci];
    const bool relu = ci % 2 == 0 || r.range(0, 1) == 1;
    const bool has_bias = ci != 3;
    const bool want_dx = ci != 0;
    INFO(describe(g) << (relu ? " relu" : " linear") << (has_bias ? " bias" : " no bias"));
    const size_t xn = size_t(g.n) * g.h * g.w * g.c, wn = size_t(g.kh) * g.kw * g.c * g.k,
                 yn = size_t(g.n) * g.oh * g.ow * g.k;
    Twin x(ref, dut, xn * 4), w(ref, dut, wn * 4), b(ref, dut, size_t(g.k) * 4), y(ref, dut, yn * 4),
        dy(ref, dut, yn * 4), dx(ref, dut, xn * 4), dw(ref, dut, wn * 4), db(ref, dut, size_t(g.k) * 4);
    x.put(r.vec(xn));
    w.put(r.vec(wn));
    b.put(r.vec(size_t(g.k), -0.5f, 0.5f));
    y.poison(yn);
    ref.conv2d_bias_relu_forward(g, x.r.f(), w.r.f(), has_bias ? b.r.f() : nullptr, relu, y.r.f());
    dut.conv2d_bias_relu_forward(g, x.d.f(), w.d.f(), has_bias ? b.d.f() : nullptr, relu, y.d.f());
    expect_twin(y, yn, conv_tol(dut, int64_t(g.kh) * g.kw * g.c, y, yn), "conv2d_bias_relu_forward");
    const std::vector<float> y_dut = y.d.get<float>(yn);
    // Both sides mask with the oracle's output, so that a rounding difference next to zero cannot
    // flip the mask.
    y.put(y.r.get<float>(yn));
    const std::vector<float> dy_values = r.vec(yn);
    for (int pass = 0; pass < 2; ++pass) {
      INFO("backward call " << pass + 1);
      dy.put(dy_values);
      dx.poison(xn);
      dw.poison(wn);
      db.poison(size_t(g.k));
      ref.conv2d_bias_relu_backward(g, x.r.f(), y.r.f(), dy.r.f(), w.r.f(), relu, dw.r.f(),
                                    has_bias ? db.r.f() : nullptr, want_dx ? dx.r.f() : nullptr);
      dut.conv2d_bias_relu_backward(g, x.d.f(), y.d.f(), dy.d.f(), w.d.f(), relu, dw.d.f(),
                                    has_bias ? db.d.f() : nullptr, want_dx ? dx.d.f() : nullptr);
      expect_twin(dw, wn, conv_tol(dut, int64_t(g.n) * g.oh * g.ow, dw, wn), "conv2d_bias_relu_backward dw");
      if (has_bias) expect_twin(db, size_t(g.k), sum_tol(int64_t(g.n) * g.oh * g.ow), "conv2d_bias_relu_backward db");
      if (want_dx) expect_twin(dx, xn, conv_tol(dut, int64_t(g.kh) * g.kw * g.k, dx, xn), "conv2d_bias_relu_backward dx");
    }
    if (dut.device().kind != DeviceKind::Gpu) continue;
    // The device's own separate ops on the same inputs.
    DevBuf y2(dut, yn * 4), dy2(dut, yn * 4), dx2(dut, xn * 4), dw2(dut, wn * 4), db2(dut, size_t(g.k) * 4);
    const int64_t rows = int64_t(g.n) * g.oh * g.ow;
    y2.put(std::vector<float>(yn, std::numeric_limits<float>::quiet_NaN()));
    dut.conv2d_forward(g, x.d.f(), w.d.f(), y2.f());
    if (has_bias) dut.bias_add(y2.f(), b.d.f(), rows, g.k);
    if (relu) dut.relu_forward(y2.f(), y2.f(), yn);
    expect_close(y2.get<float>(yn), y_dut, kExact, "fused forward equals the device's separate ops");
    dy2.put(dy_values);
    if (relu) dut.relu_backward(y.d.f(), dy2.f(), dy2.f(), yn);
    dut.conv2d_backward_filter(g, x.d.f(), dy2.f(), dw2.f());
    if (has_bias) dut.bias_grad(dy2.f(), db2.f(), rows, g.k);
    if (want_dx) dut.conv2d_backward_data(g, dy2.f(), w.d.f(), dx2.f());
    expect_close(dw2.get<float>(wn), dw.d.get<float>(wn), kExact, "fused dw equals the device's separate ops");
    if (want_dx)
      expect_close(dx2.get<float>(xn), dx.d.get<float>(xn), kExact, "fused dx equals the device's separate ops");
    if (has_bias)
      expect_close(db2.get<float>(size_t(g.k)), db.d.get<float>(size_t(g.k)), Tol{1e-6, 1e-6},
                   "fused db equals the device's separate ops to rounding");
  }
}

PoolGeometry pool_geometry(int n, int h, int w, int c, int ph, int pw, int sh, int sw, bool same) {
  PoolGeometry g;
  g.n = n;
  g.h = h;
  g.w = w;
  g.c = c;
  g.ph = ph;
  g.pw = pw;
  g.sh = sh;
  g.sw = sw;
  if (same) {
    g.oh = (h + sh - 1) / sh;
    g.ow = (w + sw - 1) / sw;
    g.pad_top = std::max((g.oh - 1) * sh + ph - h, 0) / 2;
    g.pad_left = std::max((g.ow - 1) * sw + pw - w, 0) / 2;
  } else {
    g.oh = (h - ph) / sh + 1;
    g.ow = (w - pw) / sw + 1;
  }
  return g;
}

void check_maxpool(Backend& ref, Backend& dut, Rand& r) {
  std::vector<PoolGeometry> cases = {
      pool_geometry(4, 28, 28, 64, 2, 2, 2, 2, false),  // cnn max_pooling2d
      pool_geometry(3, 14, 14, 128, 2, 2, 2, 2, false), pool_geometry(2, 7, 7, 3, 3, 3, 2, 2, true),  // padded windows
      pool_geometry(2, 6, 5, 2, 3, 3, 1, 1, true),   // overlapping windows: gradients add up
      pool_geometry(2, 7, 9, 4, 3, 2, 2, 3, false),  // leftover rows/columns
  };
  {
    int ph = r.range(1, 4), pw = r.range(1, 4);
    cases.push_back(pool_geometry(r.range(1, 3), r.range(ph, 12), r.range(pw, 12), r.range(1, 8), ph, pw, r.range(1, 3),
                                  r.range(1, 3), r.range(0, 1) == 1));
  }
  for (const PoolGeometry& g : cases) {
    INFO("maxpool n=" << g.n << " in=" << g.h << "x" << g.w << "x" << g.c << " window=" << g.ph << "x" << g.pw
                      << " stride=" << g.sh << "x" << g.sw << " pad=" << g.pad_top << "," << g.pad_left);
    const size_t xn = size_t(g.n) * g.h * g.w * g.c, yn = size_t(g.n) * g.oh * g.ow * g.c;
    for (int ties = 0; ties < 2; ++ties) {
      Twin x(ref, dut, xn * 4), y(ref, dut, yn * 4), am(ref, dut, yn * 4), dy(ref, dut, yn * 4), dx(ref, dut, xn * 4);
      x.put(ties ? r.coarse(xn, 2) : r.vec(xn));  // with ties: the first maximum wins
      y.poison(yn);
      am.poison_i32(yn);
      ref.maxpool_forward(g, x.r.f(), y.r.f(), am.r.i32());
      dut.maxpool_forward(g, x.d.f(), y.d.f(), am.d.i32());
      expect_twin(y, yn, kExact, ties ? "maxpool_forward (ties)" : "maxpool_forward");
      expect_equal_i32(am.r.get<int32_t>(yn), am.d.get<int32_t>(yn), ties ? "argmax (ties)" : "argmax");
      // Forward only (inference: no argmax recorded) gives the same maxima.
      Twin y_only(ref, dut, yn * 4);
      y_only.poison(yn);
      dut.maxpool_forward(g, x.d.f(), y_only.d.f(), nullptr);
      ref.maxpool_forward(g, x.r.f(), y_only.r.f(), am.r.i32());
      expect_twin(y_only, yn, kExact, ties ? "maxpool_forward without argmax (ties)" : "maxpool_forward without argmax");
      dy.put(r.vec(yn));
      dx.poison(xn);
      ref.maxpool_backward(g, dy.r.f(), am.r.i32(), dx.r.f());
      dut.maxpool_backward(g, dy.d.f(), am.d.i32(), dx.d.f());
      expect_twin(dx, xn, Tol{1e-6, 1e-6}, "maxpool_backward");
    }
  }
}

// ---- regularisation and normalisation -------------------------------------------------------------

void check_dropout(Backend& ref, Backend& dut, Rand& r) {
  for (int i = 0; i < 4; ++i) {
    DropoutParams p;
    p.rate = i == 0 ? 0.5f : r.uni(0.05f, 0.95f);
    p.seed = (uint64_t(r.rng.next_u32()) << 32) | r.rng.next_u32();
    p.step = i == 1 ? (uint64_t(1) << 33) + 5 : r.rng.below(100000);
    p.first_sample = r.rng.below(60000);
    p.rows = r.range(1, 64);
    p.cols = i == 0 ? 6272 : r.range(1, 3000);
    p.layer = r.rng.below(12);
    INFO("dropout rate " << p.rate << " seed " << p.seed << " step " << p.step << " first " << p.first_sample
                         << " rows " << p.rows << " cols " << p.cols << " layer " << p.layer);
    const size_t n = size_t(p.rows) * p.cols;
    Twin x(ref, dut, n * 4), y(ref, dut, n * 4), mask(ref, dut, n * 4), dy(ref, dut, n * 4), dx(ref, dut, n * 4);
    x.put(r.vec(n));
    y.poison(n);
    mask.poison(n);
    ref.dropout_forward(p, x.r.f(), y.r.f(), mask.r.f());
    dut.dropout_forward(p, x.d.f(), y.d.f(), mask.d.f());
    auto mr = mask.r.get<float>(n);
    expect_close(mr, mask.d.get<float>(n), kExact, "dropout mask (bit for bit)");
    expect_twin(y, n, kExact, "dropout output");
    size_t dropped = 0;
    for (float m : mr) dropped += m == 0.f;
    if (n >= 10000) CHECK(std::fabs(double(dropped) / n - p.rate) < 0.05);
    // The backward pass of Dropout: dx = dy * mask.
    dy.put(r.vec(n));
    dx.poison(n);
    ref.multiply(dy.r.f(), mask.r.f(), dx.r.f(), n);
    dut.multiply(dy.d.f(), mask.d.f(), dx.d.f(), n);
    expect_twin(dx, n, kExact, "dropout backward (multiply by the mask)");
  }
}

void check_batchnorm(Backend& ref, Backend& dut, Rand& r) {
  const int shapes[][2] = {{1, 1}, {6, 3}, {r.range(2, 300), r.range(1, 70)}, {25088, 64}, {r.range(1000, 9000), 130}};
  for (auto& s : shapes) {
    BatchNormParams p;
    p.rows = s[0];
    p.channels = s[1];
    p.epsilon = r.range(0, 1) ? 1e-3f : 1e-5f;
    p.momentum = r.uni(0.5f, 0.999f);
    const size_t n = size_t(p.rows) * p.channels, C = size_t(p.channels);
    INFO("batchnorm rows " << p.rows << " channels " << p.channels << " epsilon " << p.epsilon);
    // An offset mean, so that the centring matters.
    std::vector<float> xv = r.vec(n, -1, 1);
    for (size_t i = 0; i < n; ++i) xv[i] = xv[i] * (1.f + float(i % C)) + 3.f;
    Twin x(ref, dut, n * 4), y(ref, dut, n * 4), gamma(ref, dut, C * 4), beta(ref, dut, C * 4), mm(ref, dut, C * 4),
        mv(ref, dut, C * 4), smean(ref, dut, C * 4), sinv(ref, dut, C * 4), dy(ref, dut, n * 4), dx(ref, dut, n * 4),
        dgamma(ref, dut, C * 4), dbeta(ref, dut, C * 4);
    x.put(xv);
    gamma.put(r.vec(C, 0.5f, 1.5f));
    beta.put(r.vec(C));
    mm.put(r.vec(C));
    mv.put(r.vec(C, 0.5f, 2.f));
    y.poison(n);
    smean.poison(C);
    sinv.poison(C);
    ref.batchnorm_forward_train(p, x.r.f(), gamma.r.f(), beta.r.f(), mm.r.f(), mv.r.f(), y.r.f(), smean.r.f(),
                                sinv.r.f());
    dut.batchnorm_forward_train(p, x.d.f(), gamma.d.f(), beta.d.f(), mm.d.f(), mv.d.f(), y.d.f(), smean.d.f(),
                                sinv.d.f());
    expect_twin(smean, C, Tol{1e-6, 1e-6}, "batch mean");
    expect_twin(sinv, C, Tol{1e-6, 1e-5}, "batch inv_std");
    expect_twin(mm, C, Tol{1e-6, 1e-6}, "moving mean");
    expect_twin(mv, C, Tol{1e-5, 1e-5}, "moving variance");
    expect_twin(y, n, Tol{2e-5, 2e-5}, "batchnorm_forward_train");

    dy.put(r.vec(n));
    dx.poison(n);
    dgamma.poison(C);
    dbeta.poison(C);
    ref.batchnorm_backward(p, x.r.f(), dy.r.f(), gamma.r.f(), smean.r.f(), sinv.r.f(), dx.r.f(), dgamma.r.f(),
                           dbeta.r.f());
    dut.batchnorm_backward(p, x.d.f(), dy.d.f(), gamma.d.f(), smean.d.f(), sinv.d.f(), dx.d.f(), dgamma.d.f(),
                           dbeta.d.f());
    const Tol red = sum_tol(p.rows);
    expect_twin(dbeta, C, red, "dbeta");
    expect_twin(dgamma, C, red, "dgamma");
    expect_twin(dx, n, Tol{2e-5, 2e-4}, "batchnorm_backward dx");
    // In place (dx == dy), as BatchNormalization does when it is the first layer.
    dut.batchnorm_backward(p, x.d.f(), dy.d.f(), gamma.d.f(), smean.d.f(), sinv.d.f(), dy.d.f(), dgamma.d.f(),
                           dbeta.d.f());
    expect_close(dx.r.get<float>(n), dy.d.get<float>(n), Tol{2e-5, 2e-4}, "batchnorm_backward in place");

    y.poison(n);
    ref.batchnorm_forward_infer(p, x.r.f(), gamma.r.f(), beta.r.f(), mm.r.f(), mv.r.f(), y.r.f());
    dut.batchnorm_forward_infer(p, x.d.f(), gamma.d.f(), beta.d.f(), mm.d.f(), mv.d.f(), y.d.f());
    expect_twin(y, n, Tol{2e-5, 2e-5}, "batchnorm_forward_infer");
  }
}

// ---- output and loss ------------------------------------------------------------------------------

void check_softmax(Backend& ref, Backend& dut, Rand& r) {
  const int shapes[][2] = {{1, 1}, {32, 10}, {r.range(1, 300), r.range(2, 40)}, {7, 1000}};
  for (auto& s : shapes) {
    const int64_t rows = s[0];
    const int cols = s[1];
    const size_t n = size_t(rows) * cols;
    INFO("softmax rows " << rows << " cols " << cols);
    Twin z(ref, dut, n * 4), p(ref, dut, n * 4);
    z.put(r.vec(n, -20, 20));
    p.poison(n);
    ref.softmax(z.r.f(), p.r.f(), rows, cols);
    dut.softmax(z.d.f(), p.d.f(), rows, cols);
    expect_twin(p, n, Tol{1e-7, 1e-5}, "softmax");
    dut.softmax(z.d.f(), z.d.f(), rows, cols);  // in place, as Dense's softmax activation
    expect_close(p.r.get<float>(n), z.d.get<float>(n), Tol{1e-7, 1e-5}, "softmax in place");
  }
}

void check_softmax_cross_entropy(Backend& ref, Backend& dut, Rand& r) {
  const int shapes[][2] = {{1, 2}, {32, 10}, {r.range(1, 700), r.range(2, 50)}, {5, 100}};
  for (auto& s : shapes)
    for (int variant = 0; variant < 4; ++variant) {
      const bool onehot = variant & 1, with_grad = !(variant & 2);
      const int64_t rows = s[0];
      const int cols = s[1];
      const size_t n = size_t(rows) * cols;
      const float scale = r.uni(0.001f, 1.f);
      INFO("softmax_cross_entropy rows " << rows << " cols " << cols << (onehot ? " one-hot" : " sparse")
                                         << (with_grad ? " with dlogits" : " loss only") << " grad_scale " << scale);
      std::vector<int32_t> labels(rows);
      for (auto& l : labels) l = r.range(0, cols - 1);
      std::vector<float> targets(n, 0.f);
      for (int64_t i = 0; i < rows; ++i) targets[size_t(i) * cols + labels[i]] = 1.f;
      if (onehot && variant == 1 && rows > 1) {  // soft targets in one row: the loss is the full sum
        for (int c = 0; c < cols; ++c) targets[c] = 1.f / float(cols);
        targets[0] += 0.01f;
      }
      // Some rows predict their label, so that "correct" counts something.
      std::vector<float> zv = r.vec(n, -5, 5);
      for (int64_t i = 0; i < rows; i += 2) zv[size_t(i) * cols + labels[i]] += 6.f;
      Twin z(ref, dut, n * 4), lab(ref, dut, size_t(rows) * 4), oh(ref, dut, n * 4), d(ref, dut, n * 4),
          metrics(ref, dut, 32);
      z.put(zv);
      lab.put(labels);
      oh.put(targets);
      d.poison(n);
      std::vector<double> m0{r.uni(0, 10), double(r.range(0, 5)), 0, 0};
      metrics.put(m0);
      ref.softmax_cross_entropy(z.r.f(), lab.r.i32(), onehot ? oh.r.f() : nullptr, rows, cols, scale,
                                with_grad ? d.r.f() : nullptr, metrics.r.f64());
      dut.softmax_cross_entropy(z.d.f(), lab.d.i32(), onehot ? oh.d.f() : nullptr, rows, cols, scale,
                                with_grad ? d.d.f() : nullptr, metrics.d.f64());
      if (with_grad) expect_twin(d, n, Tol{1e-7, 1e-5}, "dlogits");
      auto mr = metrics.r.get<double>(4), md = metrics.d.get<double>(4);
      INFO("oracle loss " << mr[0] << " correct " << mr[1] << "; got " << md[0] << " " << md[1]);
      CHECK(std::fabs(mr[0] - md[0]) <= 1e-9 * std::fabs(mr[0]) + 1e-9);
      CHECK(mr[1] == md[1]);
      CHECK(md[2] == 0);
      CHECK(md[3] == 0);
    }
}

// ---- data and optimizers --------------------------------------------------------------------------

void check_gather_batch(Backend& ref, Backend& dut, Rand& r) {
  for (int variant = 0; variant < 3; ++variant) {
    const int64_t count = r.range(1, 200), elems = variant == 0 ? 784 : r.range(1, 100);
    const int classes = r.range(2, 12);
    const int64_t rows = r.range(1, 64);
    INFO("gather_batch count " << count << " elems " << elems << " classes " << classes << " rows " << rows
                               << " variant " << variant);
    std::vector<uint8_t> images(static_cast<size_t>(count * elems)), labels(static_cast<size_t>(count));
    for (auto& p : images) p = static_cast<uint8_t>(r.range(0, 255));
    for (auto& l : labels) l = static_cast<uint8_t>(r.range(0, classes - 1));
    std::vector<int32_t> index(rows);
    for (auto& i : index) i = r.range(0, static_cast<int>(count) - 1);  // repeats allowed
    Twin im(ref, dut, images.size()), lb(ref, dut, labels.size()), ix(ref, dut, size_t(rows) * 4),
        x(ref, dut, size_t(rows) * elems * 4), lo(ref, dut, size_t(rows) * 4), oh(ref, dut, size_t(rows) * classes * 4);
    im.put(images);
    lb.put(labels);
    ix.put(index);
    x.poison(size_t(rows) * elems);
    lo.poison_i32(rows);
    oh.poison(size_t(rows) * classes);
    const bool want_labels = variant != 2, want_onehot = variant != 1;
    ref.gather_batch(im.r.u8(), lb.r.u8(), ix.r.i32(), rows, elems, classes, x.r.f(),
                     want_labels ? lo.r.i32() : nullptr, want_onehot ? oh.r.f() : nullptr);
    dut.gather_batch(im.d.u8(), lb.d.u8(), ix.d.i32(), rows, elems, classes, x.d.f(),
                     want_labels ? lo.d.i32() : nullptr, want_onehot ? oh.d.f() : nullptr);
    expect_twin(x, size_t(rows) * elems, kExact, "gathered images / 255");
    if (want_labels) expect_equal_i32(lo.r.get<int32_t>(rows), lo.d.get<int32_t>(rows), "gathered labels");
    if (want_onehot) expect_twin(oh, size_t(rows) * classes, kExact, "one-hot targets");
  }
}

void check_sgd(Backend& ref, Backend& dut, Rand& r) {
  for (int variant = 0; variant < 3; ++variant) {
    SgdParams p;
    p.lr = r.uni(0.001f, 0.5f);
    p.momentum = variant == 0 ? 0.f : r.uni(0.5f, 0.99f);
    p.nesterov = variant == 2;
    const size_t n = size_t(r.range(1, 700000));
    INFO("sgd lr " << p.lr << " momentum " << p.momentum << " nesterov " << p.nesterov << " n " << n);
    Twin w(ref, dut, n * 4), g(ref, dut, n * 4), v(ref, dut, n * 4);
    w.put(r.vec(n));
    v.put(r.vec(n, -0.1f, 0.1f));
    for (int step = 0; step < 3; ++step) {
      g.put(r.vec(n));
      ref.sgd_update(p, w.r.f(), g.r.f(), p.momentum > 0 ? v.r.f() : nullptr, n);
      dut.sgd_update(p, w.d.f(), g.d.f(), p.momentum > 0 ? v.d.f() : nullptr, n);
    }
    // Both follow Keras's rule with the same float operations: equal to rounding.
    expect_twin(w, n, Tol{1e-7, 1e-6}, "weights");
    if (p.momentum > 0) expect_twin(v, n, Tol{1e-7, 1e-6}, "velocity");
  }
}

void check_adam(Backend& ref, Backend& dut, Rand& r) {
  AdamParams p;
  p.lr = r.uni(1e-4f, 1e-2f);
  p.beta1 = 0.9f;
  p.beta2 = 0.999f;
  p.epsilon = 1e-7f;
  const size_t n = size_t(r.range(1, 700000));
  INFO("adam lr " << p.lr << " n " << n);
  Twin w(ref, dut, n * 4), g(ref, dut, n * 4), m(ref, dut, n * 4), v(ref, dut, n * 4);
  w.put(r.vec(n));
  m.put(std::vector<float>(n, 0.f));
  v.put(std::vector<float>(n, 0.f));
  for (int64_t step = 1; step <= 4; ++step) {
    p.step = step == 4 ? 1000 : step;
    g.put(r.vec(n, -0.1f, 0.1f));
    ref.adam_update(p, w.r.f(), g.r.f(), m.r.f(), v.r.f(), n);
    dut.adam_update(p, w.d.f(), g.d.f(), m.d.f(), v.d.f(), n);
  }
  expect_twin(m, n, Tol{1e-9, 1e-6}, "adam m");
  expect_twin(v, n, Tol{1e-12, 1e-6}, "adam v");
  expect_twin(w, n, Tol{1e-7, 1e-6}, "adam weights");
}

// ---- whole models ---------------------------------------------------------------------------------

// A dataset made resident in a backend's memory.
struct Resident {
  DevBuf images, labels;
  ResidentData data;
  Resident(Backend& b, const Dataset& d) : images(b, d.images.size()), labels(b, d.labels.size()) {
    images.put(d.images);
    labels.put(d.labels);
    data.images = images.u8();
    data.labels = labels.u8();
    data.count = d.count;
    data.sample_elems = d.sample_elems();
    data.num_classes = d.num_classes;
  }
};

void expect_rel(const std::vector<float>& ref, const std::vector<float>& got, double tol, const std::string& what) {
  REQUIRE(ref.size() == got.size());
  double e = rel_norm_error(ref, got);
  INFO(what << ": relative error (2-norm) " << e << ", tolerance " << tol);
  CHECK(e <= tol);
}

// One training step (forward, loss, backward, optimizer) of `model` on both backends from the
// same weights and batch; compares outputs, metrics, every gradient tensor and the new weights.
void check_model_step(Backend& ref, Backend& dut, Rand& r, const Model& model, const Dataset& data, int64_t batch,
                      const OptimizerConfig& opt, bool one_hot, double tol) {
  const uint64_t wseed = r.rng.below(1000000);
  std::vector<float> init = model.initial_weights(wseed);
  Resident rd_ref(ref, data), rd_dut(dut, data);
  Replica a(model, ref, batch), b(model, dut, batch);
  a.set_weights(init);
  b.set_weights(init);
  std::vector<int32_t> index(batch);
  for (auto& i : index) i = r.range(0, static_cast<int>(data.count) - 1);
  StepContext ctx;
  ctx.batch = batch;
  ctx.training = true;
  ctx.seed = r.rng.below(1000);
  ctx.step = r.rng.below(1000);
  ctx.first_sample = r.rng.below(1000);
  const int classes = model.num_classes();
  std::vector<float> out[2], grads[2];
  double loss[2], correct[2];
  Replica* reps[2] = {&a, &b};
  Resident* res[2] = {&rd_ref, &rd_dut};
  for (int i = 0; i < 2; ++i) {
    Replica& rep = *reps[i];
    ctx.backend = &rep.backend();
    rep.reset_metrics();
    rep.load_batch(res[i]->data, index.data(), batch, one_hot);
    const float* y = rep.forward(ctx);
    out[i].resize(size_t(batch) * classes);
    rep.backend().download(out[i].data(), y, out[i].size() * sizeof(float));
    rep.loss(batch, 1.f / float(batch), one_hot, true);
    rep.backward(ctx);
    rep.read_metrics(&loss[i], &correct[i]);
    grads[i].resize(model.trainable_floats());
    rep.backend().download(grads[i].data(), rep.grads(), grads[i].size() * sizeof(float));
  }
  INFO("model " << model.name() << " batch " << batch << " weight seed " << wseed << " step " << ctx.step);
  expect_rel(out[0], out[1], tol, "outputs (logits)");
  INFO("loss " << loss[0] << " vs " << loss[1] << ", correct " << correct[0] << " vs " << correct[1]);
  CHECK(std::fabs(loss[0] - loss[1]) <= tol * std::fabs(loss[0]) + 1e-6);
  CHECK(std::fabs(correct[0] - correct[1]) <= 1);
  auto slice = [&](int which, const ParamSlot& p) {
    const auto begin = grads[which].begin() + static_cast<std::ptrdiff_t>(p.offset);
    return std::vector<float>(begin, begin + p.shape.numel());
  };
  const auto& layers = model.layers();
  for (size_t i = 0; i < model.params().size(); ++i) {
    const auto& p = model.params()[i];
    if (!p.spec.trainable) continue;
    const bool feeds_batchnorm = size_t(p.layer) + 1 < layers.size() &&
                                 layers[size_t(p.layer) + 1]->type() == "BatchNormalization";
    if (feeds_batchnorm && p.index == 1) {
      // A bias just before BatchNormalization has a zero gradient (the batch mean removes it):
      // both backends leave only rounding noise, far below the same layer's kernel gradient.
      const auto& kernel = model.params()[i - 1];
      REQUIRE(kernel.layer == p.layer);
      auto norm2 = [](const std::vector<float>& v) {
        double ss = 0;
        for (float x : v) ss += double(x) * x;
        return std::sqrt(ss);
      };
      for (int which : {0, 1}) {
        const double noise = norm2(slice(which, p)), scale = norm2(slice(which, kernel));
        INFO("gradient of " << p.name << " (zero before BatchNormalization) on backend " << which << ": 2-norm "
                            << noise << ", its kernel's " << scale);
        CHECK(noise <= 1e-4 * scale);
      }
      continue;
    }
    expect_rel(slice(0, p), slice(1, p), 10 * tol, "gradient of " + p.name);
  }
  // BatchNormalization's moving statistics (non-trainable) moved identically.
  expect_rel(a.weights(), b.weights(), tol, "arena after forward (moving statistics)");
  Optimizer oa(opt, ref, model.trainable_floats()), ob(opt, dut, model.trainable_floats());
  for (int step = 0; step < 2; ++step) {
    oa.apply(a.params(), a.grads(), step);
    ob.apply(b.params(), b.grads(), step);
  }
  expect_rel(a.weights(), b.weights(), tol, "weights after two updates with the same gradients");
}

Dataset image_data(int64_t count, int h, int w, int c, int classes, Rand& r) {
  return test::synthetic_dataset(count, h, w, c, classes, r.rng.below(1000000));
}

void check_mlp_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = Model::from_name_or_file("mlp");
  OptimizerConfig sgd;
  sgd.lr = 0.05;
  sgd.momentum = 0.9;
  check_model_step(ref, dut, r, model, image_data(300, 28, 28, 1, 10, r), 64, sgd, false, 1e-5);
}

void check_cnn_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = Model::from_name_or_file("cnn");
  OptimizerConfig adam;
  adam.name = "adam";
  adam.lr = 1e-3;
  check_model_step(ref, dut, r, model, image_data(100, 28, 28, 1, 10, r), 16, adam, false, 1e-4);
}

void check_bn_model_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = test::model_from(R"({"name": "bn", "input_shape": [12, 10, 3], "layers": [
      {"type": "Conv2D", "filters": 8, "kernel_size": [3, 2], "strides": 2, "padding": "same"},
      {"type": "BatchNormalization"}, {"type": "ReLU"},
      {"type": "MaxPool2D", "pool_size": 3, "strides": 1, "padding": "same"},
      {"type": "Conv2D", "filters": 6, "kernel_size": 2, "padding": "same", "activation": "relu"},
      {"type": "Flatten"}, {"type": "Dense", "units": 16}, {"type": "BatchNormalization", "epsilon": 0.01},
      {"type": "Dropout", "rate": 0.3}, {"type": "Dense", "units": 5, "activation": "softmax"}]})");
  OptimizerConfig sgd;
  sgd.lr = 0.1;
  sgd.momentum = 0.5;
  sgd.nesterov = true;
  check_model_step(ref, dut, r, model, image_data(64, 12, 10, 3, 5, r), 24, sgd, true, 1e-4);
}

// Two Trainer steps (gather from resident data, dropout keyed by step, update) on each backend.
void check_trainer_steps(Backend& ref, Backend& dut, Rand& r) {
  for (const char* preset : {"mlp", "cnn"}) {
    Model model = Model::from_name_or_file(preset);
    Dataset data = image_data(64, 28, 28, 1, 10, r);
    TrainOptions o;
    o.epochs = 1;
    o.batch_size = 32;
    o.seed = r.rng.below(1000);
    OptimizerConfig opt;
    opt.lr = 0.05;
    opt.momentum = 0.9;
    Trainer ta(model, {&ref}, o, opt), tb(model, {&dut}, o, opt);
    auto la = ta.fit(data, nullptr, {});
    auto lb = tb.fit(data, nullptr, {});
    INFO("preset " << preset << " seed " << o.seed);
    REQUIRE(la.size() == 1);
    REQUIRE(lb.size() == 1);
    CHECK(std::fabs(la[0].loss - lb[0].loss) <= 1e-4 * std::fabs(la[0].loss));
    expect_rel(ta.weights(), tb.weights(), 1e-4, std::string("weights after two steps of ") + preset);
  }
}

// Dropout followed by an identity Dense layer: the model's output is the dropout layer's output
// exactly (products with 1 and 0 are exact), so the masks must agree bit for bit.
void check_dropout_model(Backend& ref, Backend& dut, Rand& r) {
  Model model = test::model_from(R"({"input_shape": [8, 8, 3], "layers": [{"type": "Flatten"},
      {"type": "Dropout", "rate": 0.4}, {"type": "Dense", "units": 192, "activation": "softmax"}]})");
  Dataset data = image_data(40, 8, 8, 3, static_cast<int>(model.num_classes()), r);
  std::vector<float> w = model.initial_weights(1);
  for (const auto& p : model.params()) {
    std::fill(w.begin() + p.offset, w.begin() + p.offset + p.shape.numel(), 0.f);
    if (p.shape.rank() == 2)
      for (int64_t i = 0; i < p.shape[0]; ++i) w[p.offset + i * p.shape[1] + i] = 1.f;
  }
  Resident rd_ref(ref, data), rd_dut(dut, data);
  Replica a(model, ref, 16), b(model, dut, 16);
  a.set_weights(w);
  b.set_weights(w);
  std::vector<int32_t> index(16);
  for (auto& i : index) i = r.range(0, 39);
  StepContext ctx;
  ctx.batch = 16;
  ctx.training = true;
  ctx.seed = r.rng.below(1u << 30);
  ctx.step = r.rng.below(1u << 20);
  ctx.first_sample = r.rng.below(1000);
  std::vector<float> out[2];
  Replica* reps[2] = {&a, &b};
  Resident* res[2] = {&rd_ref, &rd_dut};
  for (int i = 0; i < 2; ++i) {
    ctx.backend = &reps[i]->backend();
    reps[i]->load_batch(res[i]->data, index.data(), 16, false);
    const float* y = reps[i]->forward(ctx);
    out[i].resize(16 * 192);
    reps[i]->backend().download(out[i].data(), y, out[i].size() * 4);
  }
  expect_close(out[0], out[1], kExact, "dropout layer output");
  size_t zeros = 0;
  for (float v : out[0]) zeros += v == 0.f;
  CHECK(double(zeros) / double(out[0].size()) > 0.3);  // the mask did drop (rate 0.4)
}

}  // namespace

// ---- the test cases -----------------------------------------------------------------------------

CONFORMANCE_CASES("memory (allocate, upload, download, copy, fill, synchronize)", check_memory)
CONFORMANCE_CASES("gemm", check_gemm)
CONFORMANCE_CASES("bias_add and bias_grad", check_bias)
CONFORMANCE_CASES("relu, add, scale, multiply", check_elementwise)
CONFORMANCE_CASES("conv2d forward, backward data, backward filter", check_conv)
CONFORMANCE_CASES("conv2d with bias and relu, fused", check_conv_fused)
CONFORMANCE_CASES("maxpool forward and backward", check_maxpool)
CONFORMANCE_CASES("dropout", check_dropout)
CONFORMANCE_CASES("batchnorm train, infer, backward", check_batchnorm)
CONFORMANCE_CASES("softmax", check_softmax)
CONFORMANCE_CASES("softmax_cross_entropy", check_softmax_cross_entropy)
CONFORMANCE_CASES("gather_batch", check_gather_batch)
CONFORMANCE_CASES("sgd_update", check_sgd)
CONFORMANCE_CASES("adam_update", check_adam)
CONFORMANCE_CASES("model: one training step of the mlp preset", check_mlp_step)
CONFORMANCE_CASES("model: one training step of the cnn preset", check_cnn_step)
CONFORMANCE_CASES("model: conv + batchnorm + pool + dropout, one-hot targets", check_bn_model_step)
CONFORMANCE_CASES("model: two Trainer steps of mlp and cnn", check_trainer_steps)
CONFORMANCE_CASES("model: dropout masks are identical", check_dropout_model)

// The forward-only CPU backend (tandem serve, predict, evaluate) runs Conv2D on oneDNN where it is
// built in: Winograd for 3x3 stride-1 layers of two images or more, a batch cut into power-of-two
// chunks, filters re-laid out once and again after every write to them. Against the 1-thread
// oracle, for batch sizes that take every path, and after the filters are overwritten in place.
TEST_CASE("conformance (cpu inference): conv2d with bias and relu, every batch size, filters rewritten",
          "[cpu][conformance]") {
  auto oracle = make_cpu_backend(1);
  auto dut = make_cpu_backend(2);
  dut->set_inference_only(true);
  Rand r(name_hash("cpu inference conv"));
  const std::vector<ConvGeometry> shapes = {
      conv_geometry(1, 28, 28, 1, 7, 7, 64, 1, 1, true),     // cnn conv2d
      conv_geometry(1, 14, 14, 64, 3, 3, 128, 1, 1, true),   // cnn conv2d_1 (Winograd from 2 images)
      conv_geometry(1, 14, 14, 128, 3, 3, 128, 1, 1, true),  // cnn conv2d_2
      conv_geometry(1, 9, 7, 5, 3, 3, 6, 1, 1, false),       // 3x3 valid, odd sizes
      conv_geometry(1, 6, 6, 2, 3, 2, 4, 2, 2, true),        // strided, asymmetric padding
  };
  for (const ConvGeometry& shape : shapes) {
    const int max_n = 37;
    const size_t xs = size_t(shape.h) * shape.w * shape.c, ys = size_t(shape.oh) * shape.ow * shape.k,
                 wn = size_t(shape.kh) * shape.kw * shape.c * shape.k;
    Twin x(*oracle, *dut, xs * max_n * 4), w(*oracle, *dut, wn * 4), b(*oracle, *dut, size_t(shape.k) * 4),
        y(*oracle, *dut, ys * max_n * 4);
    x.put(r.vec(xs * max_n));
    b.put(r.vec(size_t(shape.k), -0.5f, 0.5f));
    for (int round = 0; round < 2; ++round) {
      w.put(r.vec(wn));  // round 1: new filters written over the ones laid out in round 0
      for (int n : {1, 2, 3, 16, max_n}) {
        ConvGeometry g = shape;
        g.n = n;
        INFO(describe(g) << ", filters " << round);
        const size_t yn = ys * n;
        y.poison(yn);
        oracle->conv2d_bias_relu_forward(g, x.r.f(), w.r.f(), b.r.f(), true, y.r.f());
        dut->conv2d_bias_relu_forward(g, x.d.f(), w.d.f(), b.d.f(), true, y.d.f());
        // Winograd's fp32 error scales with the outputs' overall magnitude, as on the GPU.
        Tol tol = sum_tol(int64_t(g.kh) * g.kw * g.c);
        double ss = 0;
        for (float v : y.r.get<float>(yn)) ss += double(v) * v;
        tol.atol += 2e-4 * std::sqrt(ss / double(yn));
        expect_twin(y, yn, tol, "inference conv2d_bias_relu_forward");
      }
    }
  }
}

// Dense on the forward-only CPU backend: oneDNN's inner product for the power-of-two chunks of 16
// rows or more, the GEMM for the rest and for long reductions over few outputs; weights laid out
// once and again after they are overwritten in place. Against the oracle's separate ops.
TEST_CASE("conformance (cpu inference): dense forward, every row count, weights rewritten", "[cpu][conformance]") {
  auto oracle = make_cpu_backend(1);
  auto dut = make_cpu_backend(2);
  dut->set_inference_only(true);
  Rand r(name_hash("cpu inference dense"));
  struct Shape {
    int in, units;
    bool bias, relu;
  };
  for (const Shape& sh : {Shape{784, 300, true, true}, Shape{300, 100, true, false}, Shape{100, 10, false, true},
                          Shape{6272, 64, true, true}, Shape{5, 3, true, true}}) {
    const int max_m = 261;
    Twin x(*oracle, *dut, size_t(max_m) * sh.in * 4), w(*oracle, *dut, size_t(sh.in) * sh.units * 4),
        b(*oracle, *dut, size_t(sh.units) * 4), y(*oracle, *dut, size_t(max_m) * sh.units * 4);
    x.put(r.vec(size_t(max_m) * sh.in));
    b.put(r.vec(size_t(sh.units), -0.5f, 0.5f));
    for (int round = 0; round < 2; ++round) {
      w.put(r.vec(size_t(sh.in) * sh.units));  // round 1: overwrites the weights laid out in round 0
      for (int m : {1, 15, 16, 37, max_m}) {
        INFO("dense " << sh.in << "x" << sh.units << (sh.bias ? " bias" : "") << (sh.relu ? " relu" : "") << ", rows "
                      << m << ", weights " << round);
        const size_t yn = size_t(m) * sh.units;
        y.poison(yn);
        oracle->dense_forward(x.r.f(), w.r.f(), sh.bias ? b.r.f() : nullptr, sh.relu, m, sh.in, sh.units, y.r.f());
        dut->dense_forward(x.d.f(), w.d.f(), sh.bias ? b.d.f() : nullptr, sh.relu, m, sh.in, sh.units, y.d.f());
        expect_twin(y, yn, sum_tol(sh.in), "inference dense_forward");
      }
    }
  }
}

TEST_CASE("conformance: TF32 mode stays within TF32 tolerance and fp32 mode returns", "[gpu][conformance]") {
  if (!gpu_or_skip()) return;
#ifdef TANDEM_HAVE_CUDA
  auto oracle = make_cpu_backend(1);
  auto gpu = make_cuda_backend(0, CudaBackendOptions{GpuPrecision::Tf32});
  Rand r(name_hash("tf32"));
  // TF32 keeps 10 mantissa bits: errors ~ 2^-11 per product, growing like sqrt(k).
  auto tf32_tol = [](int64_t k) { return Tol{2e-3 * std::sqrt(double(k)), 1e-2}; };
  one_gemm(*oracle, *gpu, r, false, false, 256, 300, 784, 1.f, 0.f, tf32_tol(784));
  one_gemm(*oracle, *gpu, r, true, false, 784, 300, 256, 1.f, 0.f, tf32_tol(256));
  ConvGeometry g = conv_geometry(4, 14, 14, 64, 3, 3, 128, 1, 1, true);
  const size_t xn = size_t(g.n) * g.h * g.w * g.c, wn = size_t(g.kh) * g.kw * g.c * g.k,
               yn = size_t(g.n) * g.oh * g.ow * g.k;
  Twin x(*oracle, *gpu, xn * 4), w(*oracle, *gpu, wn * 4), y(*oracle, *gpu, yn * 4);
  x.put(r.vec(xn));
  w.put(r.vec(wn));
  y.poison(yn);
  oracle->conv2d_forward(g, x.r.f(), w.r.f(), y.r.f());
  gpu->conv2d_forward(g, x.d.f(), w.d.f(), y.d.f());
  expect_twin(y, yn, tf32_tol(576), "conv2d_forward in TF32");
  // Back to fp32: the plans are re-chosen and the fp32 tolerances hold again (the convolution's
  // for whichever algorithm the new search picks: FFT among them, see conv_tol).
  cuda_set_precision(*gpu, GpuPrecision::Fp32);
  y.poison(yn);  // both sides: the oracle computes its half again
  oracle->conv2d_forward(g, x.r.f(), w.r.f(), y.r.f());
  gpu->conv2d_forward(g, x.d.f(), w.d.f(), y.d.f());
  expect_twin(y, yn, conv_tol(*gpu, 576, y, yn), "conv2d_forward back in fp32");
  one_gemm(*oracle, *gpu, r, false, false, 256, 300, 784, 1.f, 0.f, sum_tol(784));
#endif
}

TEST_CASE("conformance: device errors are typed and say what to do", "[gpu][conformance]") {
  if (!gpu_or_skip()) return;
#ifdef TANDEM_HAVE_CUDA
  auto gpu = make_cuda_backend(0);
  // An impossible allocation: a Device error suggesting a smaller batch, and the backend still works.
  try {
    gpu->allocate(size_t(1) << 50);
    FAIL("allocating 1 PiB succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Device);
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("out of GPU memory"));
    CHECK_THAT(e.hint(), Catch::Matchers::Contains("--batch-size"));
  }
  DevBuf b(*gpu, 64);
  b.put(std::vector<float>{1, 2, 3});
  CHECK(b.get<float>(3) == std::vector<float>{1, 2, 3});
  const int count = cuda_device_count();
  try {
    make_cuda_backend(count);
    FAIL("gpu:" << count << " should not exist");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Device);
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("has " + std::to_string(count) + " GPU"));
  }
  CHECK_THROWS_AS(make_cuda_backend(-1), Error);
#endif
}

TEST_CASE("without a GPU, asking for one is a clear Device error, not a crash", "[cpu][conformance]") {
  if (gpu_count() > 0) return;  // covered by the [gpu] case above
  CHECK(!cuda_available());
  try {
    make_backend(Device{DeviceKind::Gpu, 0}, 1);
    FAIL("made a GPU backend without a GPU");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Device);
    CHECK(e.exit_status() == 1);
    CHECK_THAT(e.hint(), Catch::Matchers::Contains("--device cpu"));
#ifdef TANDEM_HAVE_CUDA
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("no GPU was found"));
#endif
  }
}

// Shared by the backend conformance tests (tests/kernels/conformance_*.cpp, one file per op family):
// every Backend op, on every backend present, against the CPU oracle (a one-thread CpuBackend), with
// fresh random inputs each run (the seed is printed; set TANDEM_TEST_SEED to repeat a run) and output
// buffers poisoned with NaN before each op.
//
// Each op has two test cases:
//   "conformance: <op>"                [gpu]  the CUDA backend (gpu:0) against the oracle. Without a
//                                              GPU it prints "SKIPPED: no GPU" and exits with 77
//                                              (ctest: skipped) when run on its own, as ctest does.
//   "conformance (cpu threads): <op>"  [cpu]  a 3-thread CpuBackend against the oracle, so the
//                                              checks themselves run on every machine.
#pragma once
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

namespace tandem::conformance {

using test::gpu_count;
using test::gpu_or_skip;
using test::conv_geometry;
using test::make_gpu_backend;

// ---- seeds, skipping, backends -------------------------------------------------------------------

inline uint64_t run_seed() {
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

inline uint64_t name_hash(const std::string& s) {
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
inline void run_gpu(const std::string& op, const Check& check) {
  if (!gpu_or_skip()) return;
  auto oracle = make_cpu_backend(1);
  auto gpu = make_gpu_backend();
  REQUIRE(gpu);
  Rand r(name_hash(op));
  INFO("op " << op << ", backend " << gpu->name() << " " << gpu->device().str() << ", seed " << run_seed());
  check(*oracle, *gpu, r);
  gpu->synchronize();
}

inline void run_cpu_threads(const std::string& op, const Check& check) {
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
inline void expect_close(const std::vector<float>& ref, const std::vector<float>& got, Tol t, const std::string& what) {
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

inline void expect_twin(Twin& t, size_t n, Tol tol, const std::string& what) {
  expect_close(t.r.get<float>(n), t.d.get<float>(n), tol, what);
}

inline void expect_equal_i32(const std::vector<int32_t>& ref, const std::vector<int32_t>& got,
                             const std::string& what) {
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
inline double rel_norm_error(const std::vector<float>& ref, const std::vector<float>& got) {
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
inline Tol sum_tol(int64_t k) { return Tol{2e-6 * std::sqrt(double(std::max<int64_t>(k, 1))) + 1e-6, 2e-5}; }

// ---- convolution and pooling ----------------------------------------------------------------------

inline std::string describe(const ConvGeometry& g) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "conv n=%d in=%dx%dx%d kernel=%dx%d k=%d stride=%dx%d pad=%d,%d out=%dx%d", g.n, g.h,
                g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left, g.oh, g.ow);
  return buf;
}

inline std::vector<ConvGeometry> conv_cases(Rand& r) {
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
inline Tol conv_tol(const Backend& dut, int64_t k, Twin& t, size_t n) {
  Tol tol = sum_tol(k);
  if (dut.device().kind != DeviceKind::Gpu || n == 0) return tol;
  double ss = 0;
  for (float v : t.r.get<float>(n)) ss += double(v) * v;
  tol.atol += 2e-4 * std::sqrt(ss / double(n));
  return tol;
}

inline void one_gemm(Backend& ref, Backend& dut, Rand& r, bool ta, bool tb, int m, int n, int k, float alpha,
                     float beta, Tol tol) {
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

}  // namespace tandem::conformance

// Backend conformance (tests/kernels/conformance.h): GPU-only checks (TF32 mode, device errors).
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

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

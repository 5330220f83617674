// Backend conformance (tests/kernels/conformance.h): memory, GEMM, bias, elementwise ops; the forward-only CPU
// backend's dense layer.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

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

}  // namespace

CONFORMANCE_CASES("memory (allocate, upload, download, copy, fill, synchronize)", check_memory)
CONFORMANCE_CASES("gemm", check_gemm)
CONFORMANCE_CASES("bias_add and bias_grad", check_bias)
CONFORMANCE_CASES("relu, add, scale, multiply", check_elementwise)

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

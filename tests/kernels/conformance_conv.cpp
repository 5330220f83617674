// Backend conformance (tests/kernels/conformance.h): convolutions (plain and fused with bias and ReLU) and max pooling;
// the forward-only CPU backend's convolutions.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

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
      if (want_dx)
        expect_twin(dx, xn, conv_tol(dut, int64_t(g.kh) * g.kw * g.k, dx, xn), "conv2d_bias_relu_backward dx");
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
      expect_twin(y_only, yn, kExact,
                  ties ? "maxpool_forward without argmax (ties)" : "maxpool_forward without argmax");
      dy.put(r.vec(yn));
      dx.poison(xn);
      ref.maxpool_backward(g, dy.r.f(), am.r.i32(), dx.r.f());
      dut.maxpool_backward(g, dy.d.f(), am.d.i32(), dx.d.f());
      expect_twin(dx, xn, Tol{1e-6, 1e-6}, "maxpool_backward");
    }
  }
}

}  // namespace

CONFORMANCE_CASES("conv2d forward, backward data, backward filter", check_conv)
CONFORMANCE_CASES("conv2d with bias and relu, fused", check_conv_fused)
CONFORMANCE_CASES("maxpool forward and backward", check_maxpool)

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

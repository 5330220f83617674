// The CPU backend's convolution and pooling against naive loops written straight from the
// definitions (TensorFlow's NHWC / HWIO semantics, "same" padding split as TF splits it).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "engine/backend.h"
#include "engine/rng.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed) { return test::random_floats(n, seed); }

float& at4(std::vector<float>& v, int a, int b, int c, int d, int B, int C, int D) {
  return v[((size_t(a) * B + b) * C + c) * D + d];
}

void naive_conv(const ConvGeometry& g, std::vector<float> x, std::vector<float> w, std::vector<float>& y) {
  y.assign(size_t(g.n) * g.oh * g.ow * g.k, 0.f);
  for (int n = 0; n < g.n; ++n)
    for (int oy = 0; oy < g.oh; ++oy)
      for (int ox = 0; ox < g.ow; ++ox)
        for (int k = 0; k < g.k; ++k) {
          double s = 0;
          for (int ky = 0; ky < g.kh; ++ky)
            for (int kx = 0; kx < g.kw; ++kx)
              for (int c = 0; c < g.c; ++c) {
                int iy = oy * g.sh - g.pad_top + ky, ix = ox * g.sw - g.pad_left + kx;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                s += double(at4(x, n, iy, ix, c, g.h, g.w, g.c)) * at4(w, ky, kx, c, k, g.kw, g.c, g.k);
              }
          at4(y, n, oy, ox, k, g.oh, g.ow, g.k) = float(s);
        }
}

void require_close(const std::vector<float>& a, const std::vector<float>& b, double tol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    REQUIRE(std::fabs(double(a[i]) - b[i]) <= tol * (1 + std::fabs(double(b[i]))));
  }
}

}  // namespace

TEST_CASE("cpu conv2d forward and both backward passes match the definition", "[cpu][kernels]") {
  auto backend = make_cpu_backend(2);
  struct Case { int n, h, w, c, kh, kw, k, sh, sw; bool same; };
  for (Case cs : {Case{2, 7, 7, 3, 3, 3, 4, 1, 1, true}, Case{3, 8, 6, 2, 3, 2, 5, 2, 2, true},
                  Case{2, 9, 9, 1, 7, 7, 3, 1, 1, true}, Case{2, 6, 5, 4, 2, 3, 3, 2, 1, false},
                  Case{2, 5, 5, 3, 1, 1, 6, 1, 1, false}}) {
    ConvGeometry g = test::conv_geometry(cs.n, cs.h, cs.w, cs.c, cs.kh, cs.kw, cs.k, cs.sh, cs.sw, cs.same);
    INFO("conv " << cs.kh << "x" << cs.kw << " stride " << cs.sh << "," << cs.sw << (cs.same ? " same" : " valid"));
    auto x = random_vec(size_t(g.n) * g.h * g.w * g.c, 1);
    auto w = random_vec(size_t(g.kh) * g.kw * g.c * g.k, 2);
    auto dy = random_vec(size_t(g.n) * g.oh * g.ow * g.k, 3);
    std::vector<float> y(dy.size(), NAN), ref;
    backend->conv2d_forward(g, x.data(), w.data(), y.data());
    naive_conv(g, x, w, ref);
    require_close(y, ref, 1e-5);

    // <dy, conv(x, w)> is bilinear: its gradients are the backward passes. Check them exactly
    // against the definition by perturbing one-hot inputs.
    std::vector<float> dx(x.size(), NAN), dw(w.size(), NAN);
    backend->conv2d_backward_data(g, dy.data(), w.data(), dx.data());
    backend->conv2d_backward_filter(g, x.data(), dy.data(), dw.data());
    std::vector<float> ref_dx(x.size()), ref_dw(w.size());
    for (size_t i = 0; i < x.size(); ++i) {
      std::vector<float> e(x.size(), 0.f), out;
      e[i] = 1.f;
      naive_conv(g, e, w, out);
      double s = 0;
      for (size_t j = 0; j < out.size(); ++j) s += double(out[j]) * dy[j];
      ref_dx[i] = float(s);
    }
    for (size_t i = 0; i < w.size(); ++i) {
      std::vector<float> e(w.size(), 0.f), out;
      e[i] = 1.f;
      naive_conv(g, x, e, out);
      double s = 0;
      for (size_t j = 0; j < out.size(); ++j) s += double(out[j]) * dy[j];
      ref_dw[i] = float(s);
    }
    require_close(dx, ref_dx, 1e-5);
    require_close(dw, ref_dw, 1e-5);
  }
}

TEST_CASE("cpu maxpool forward and backward match the definition", "[cpu][kernels]") {
  auto backend = make_cpu_backend(2);
  for (int same = 0; same < 2; ++same) {
    PoolGeometry g;
    g.n = 2; g.h = 7; g.w = 6; g.c = 3; g.ph = 3; g.pw = 2; g.sh = 2; g.sw = 2;
    if (same) {
      g.oh = (g.h + 1) / 2; g.ow = (g.w + 1) / 2;
      g.pad_top = std::max((g.oh - 1) * g.sh + g.ph - g.h, 0) / 2;
      g.pad_left = std::max((g.ow - 1) * g.sw + g.pw - g.w, 0) / 2;
    } else {
      g.oh = (g.h - g.ph) / g.sh + 1; g.ow = (g.w - g.pw) / g.sw + 1;
    }
    auto x = random_vec(size_t(g.n) * g.h * g.w * g.c, 4);
    auto dy = random_vec(size_t(g.n) * g.oh * g.ow * g.c, 5);
    std::vector<float> y(dy.size(), NAN), dx(x.size(), NAN), ref_dx(x.size(), 0.f);
    std::vector<int32_t> arg(dy.size(), -7);
    backend->maxpool_forward(g, x.data(), y.data(), arg.data());
    backend->maxpool_backward(g, dy.data(), arg.data(), dx.data());
    std::vector<float> y_only(dy.size(), NAN);  // forward only: no argmax recorded, same maxima
    backend->maxpool_forward(g, x.data(), y_only.data(), nullptr);
    require_close(y_only, y, 0);
    for (int n = 0; n < g.n; ++n)
      for (int oy = 0; oy < g.oh; ++oy)
        for (int ox = 0; ox < g.ow; ++ox)
          for (int c = 0; c < g.c; ++c) {
            float best = -std::numeric_limits<float>::infinity();
            int bi = -1;
            for (int ky = 0; ky < g.ph; ++ky)
              for (int kx = 0; kx < g.pw; ++kx) {
                int iy = oy * g.sh - g.pad_top + ky, ix = ox * g.sw - g.pad_left + kx;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                float v = at4(x, n, iy, ix, c, g.h, g.w, g.c);
                if (v > best) { best = v; bi = (iy * g.w + ix) * g.c + c; }
              }
            size_t o = ((size_t(n) * g.oh + oy) * g.ow + ox) * g.c + c;
            REQUIRE(y[o] == best);
            ref_dx[size_t(n) * g.h * g.w * g.c + bi] += dy[o];
          }
    require_close(dx, ref_dx, 0);
  }
}

TEST_CASE("cpu optimizers follow Keras's update rules", "[cpu][kernels]") {
  auto backend = make_cpu_backend(1);
  std::vector<float> w{1.f, -2.f}, g{0.5f, -0.25f}, v{0.f, 0.f}, m{0.f, 0.f};
  SgdParams s; s.lr = 0.1f; s.momentum = 0.9f;
  backend->sgd_update(s, w.data(), g.data(), v.data(), 2);
  CHECK(v[0] == Approx(-0.05f));
  CHECK(w[0] == Approx(0.95f));
  backend->sgd_update(s, w.data(), g.data(), v.data(), 2);
  CHECK(v[0] == Approx(0.9f * -0.05f - 0.05f));
  CHECK(w[0] == Approx(0.95f + 0.9f * -0.05f - 0.05f));
  std::vector<float> w2{1.f}, g2{0.5f}, m2{0.f}, v2{0.f};
  AdamParams a; a.lr = 0.01f; a.step = 1;
  backend->adam_update(a, w2.data(), g2.data(), m2.data(), v2.data(), 1);
  // First Adam step moves every weight by lr * sign(g) (up to epsilon).
  CHECK(w2[0] == Approx(1.f - 0.01f).epsilon(1e-5));
}

TEST_CASE("dropout masks depend on (seed, step, sample, element) only", "[cpu][kernels]") {
  auto b1 = make_cpu_backend(1), b2 = make_cpu_backend(2);
  DropoutParams p;
  p.rate = 0.5f; p.seed = 42; p.step = 3; p.rows = 8; p.cols = 100;
  std::vector<float> x(800, 1.f), y1(800), m1(800), y2(800), m2(800);
  b1->dropout_forward(p, x.data(), y1.data(), m1.data());
  b2->dropout_forward(p, x.data(), y2.data(), m2.data());
  REQUIRE(m1 == m2);
  // Samples 4..7 computed as a replica holding the second half get the same masks.
  DropoutParams half = p;
  half.rows = 4; half.first_sample = 4;
  std::vector<float> y3(400), m3(400);
  b1->dropout_forward(half, x.data(), y3.data(), m3.data());
  REQUIRE(std::equal(m3.begin(), m3.end(), m1.begin() + 400));
  int kept = 0;
  for (float v : m1) {
    REQUIRE((v == 0.f || v == 2.f));
    kept += v != 0.f;
  }
  CHECK(kept > 320);
  CHECK(kept < 480);
  DropoutParams next = p;
  next.step = 4;
  b1->dropout_forward(next, x.data(), y2.data(), m2.data());
  CHECK(m1 != m2);
}

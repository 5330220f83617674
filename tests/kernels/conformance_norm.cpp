// Backend conformance (tests/kernels/conformance.h): dropout and BatchNormalization.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

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

}  // namespace

CONFORMANCE_CASES("dropout", check_dropout)
CONFORMANCE_CASES("batchnorm train, infer, backward", check_batchnorm)

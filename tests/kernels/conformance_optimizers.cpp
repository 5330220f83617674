// Backend conformance (tests/kernels/conformance.h): the SGD and Adam updates.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

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

}  // namespace

CONFORMANCE_CASES("sgd_update", check_sgd)
CONFORMANCE_CASES("adam_update", check_adam)

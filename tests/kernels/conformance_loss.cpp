// Backend conformance (tests/kernels/conformance.h): softmax, softmax cross-entropy and the batch gather.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

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

}  // namespace

CONFORMANCE_CASES("softmax", check_softmax)
CONFORMANCE_CASES("softmax_cross_entropy", check_softmax_cross_entropy)
CONFORMANCE_CASES("gather_batch", check_gather_batch)

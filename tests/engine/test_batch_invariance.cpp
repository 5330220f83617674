// Batch invariance (--batch-invariant): the CPU backend's bits do not depend on the thread count
// in that mode, and training with leaves gives bit-identical weights for every replica count
// dividing the leaves and every thread count, with dropout, BatchNormalization and a short last
// batch. (The same across processes and MPI ranks: tests/mpi/mpi_checks.py.)
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <memory>

#include "engine/backend.h"
#include "engine/errors.h"
#include "engine/rng.h"
#include "engine/trainer.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;
using Catch::Matchers::Contains;

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed) { return test::random_floats(n, seed, 3); }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("batch-invariant cpu gemm: correct for every transpose and the same bits for any thread count",
          "[cpu][kernels][invariance]") {
  struct Shape {
    int m, n, k;
  };
  // Taller than wide (cut by rows), wider than tall (cut by columns), exact and ragged blocks.
  for (Shape s : {Shape{150, 70, 33}, Shape{20, 130, 17}, Shape{128, 64, 5}, Shape{1, 1, 300}, Shape{65, 3, 200}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        // Leading dimensions with padding, so that a wrong block offset reads the wrong elements.
        const int lda = (ta ? s.m : s.k) + 3, ldb = (tb ? s.k : s.n) + 2, ldc = s.n + 5;
        const auto a = random_vec(size_t(ta ? s.k : s.m) * lda, 1);
        const auto b = random_vec(size_t(tb ? s.n : s.k) * ldb, 2);
        const auto c0 = random_vec(size_t(s.m) * ldc, 3);
        std::vector<std::vector<float>> results;
        for (int threads : {1, 2, 3}) {
          auto be = make_cpu_backend(threads);
          be->set_batch_invariant(true);
          std::vector<float> c = c0;
          be->gemm(ta, tb, s.m, s.n, s.k, 0.7f, a.data(), lda, b.data(), ldb, 0.25f, c.data(), ldc);
          results.push_back(c);
        }
        INFO("m=" << s.m << " n=" << s.n << " k=" << s.k << " ta=" << ta << " tb=" << tb);
        CHECK(same_bits(results[0], results[1]));
        CHECK(same_bits(results[0], results[2]));
        double worst = 0;
        for (int i = 0; i < s.m; ++i)
          for (int j = 0; j < ldc; ++j) {
            double want = c0[size_t(i) * ldc + j];
            if (j < s.n) {
              double dot = 0;
              for (int p = 0; p < s.k; ++p)
                dot += double(ta ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p]) *
                       double(tb ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j]);
              want = 0.7 * dot + 0.25 * want;
            }
            // Padding columns of C must be untouched; the rest within float rounding of the sum.
            worst = std::max(worst, std::fabs(want - results[0][size_t(i) * ldc + j]) / (1.0 + std::sqrt(double(s.k))));
          }
        CHECK(worst < 1e-5);
      }
  }
}

TEST_CASE("cpu column sums (bias and BatchNormalization gradients) do not depend on the thread count",
          "[cpu][kernels][invariance]") {
  const int64_t rows = 1000;
  const int cols = 7;
  const auto dy = random_vec(size_t(rows) * cols, 4), x = random_vec(size_t(rows) * cols, 5);
  const auto gamma = random_vec(cols, 6), beta = random_vec(cols, 7);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3}) {
    auto be = make_cpu_backend(threads);
    std::vector<float> db(cols);
    be->bias_grad(dy.data(), db.data(), rows, cols);
    BatchNormParams p;
    p.rows = rows;
    p.channels = cols;
    std::vector<float> mm(cols, 0.f), mv(cols, 1.f), y(dy.size()), mean(cols), inv(cols);
    be->batchnorm_forward_train(p, x.data(), gamma.data(), beta.data(), mm.data(), mv.data(), y.data(), mean.data(),
                                inv.data());
    std::vector<float> dx(dy.size()), dg(cols), dbeta(cols);
    be->batchnorm_backward(p, x.data(), dy.data(), gamma.data(), mean.data(), inv.data(), dx.data(), dg.data(),
                           dbeta.data());
    std::vector<float> all = db;
    for (const auto* v : {&mm, &mv, &y, &mean, &inv, &dx, &dg, &dbeta}) all.insert(all.end(), v->begin(), v->end());
    outs.push_back(all);
  }
  CHECK(same_bits(outs[0], outs[1]));
  CHECK(same_bits(outs[0], outs[2]));
  // And they are the sums: the bias gradient against a double sum.
  for (int c = 0; c < cols; ++c) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += dy[size_t(r) * cols + c];
    CHECK(std::fabs(outs[0][c] - s) < 1e-4);
  }
}

namespace {

// Big enough that OpenBLAS threads and blocks come into play: 32 samples of 12x12 per leaf give
// 4,608 rows of im2col, and Dense(96) over 576 features.
const char* kInvariantCnn = R"({"name": "inv", "input_shape": [12, 12, 1], "layers": [
    {"type": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "BatchNormalization"},
    {"type": "MaxPool2D", "pool_size": 2}, {"type": "Flatten"},
    {"type": "Dense", "units": 96, "activation": "relu"}, {"type": "Dropout", "rate": 0.3},
    {"type": "Dense", "units": 4, "activation": "softmax"}]})";

std::vector<float> train_invariant(const Model& m, int replicas, int threads, int leaves, const std::string& optimizer,
                                   bool central_storage = false) {
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 128;
  o.seed = 5;
  o.leaves = leaves;
  const OptimizerConfig opt = test::test_optimizer(optimizer);
  // 296 images: two full batches and a last one of 40 (10 per leaf of 4).
  test::Trained t = test::train_cpu_replicas(m, replicas, threads, o, opt, test::synthetic_dataset(296, 12, 12, 1, 4, 9),
                                             central_storage);
  REQUIRE(t.replicas_agree);
  return t.weights;
}

}  // namespace

TEST_CASE("batch invariance: the same weights bit for bit for any replica and thread count",
          "[cpu][replicas][invariance]") {
  Model m = test::model_from(kInvariantCnn);
  const std::vector<float> init = m.initial_weights(5);
  for (const char* opt : {"sgd", "adam"}) {
    INFO(opt);
    const auto one = train_invariant(m, 1, 1, 4, opt);
    CHECK(!same_bits(one, init));  // it trained
    CHECK(same_bits(train_invariant(m, 1, 3, 4, opt), one));
    CHECK(same_bits(train_invariant(m, 2, 2, 4, opt), one));
    CHECK(same_bits(train_invariant(m, 4, 1, 4, opt), one));
    CHECK(same_bits(train_invariant(m, 2, 1, 4, opt, true), one));  // central storage
  }
}

TEST_CASE("BatchNormalization's moving statistics are averaged over replicas, which stay identical",
          "[cpu][replicas]") {
  Model m = test::model_from(kInvariantCnn);
  const std::vector<float> init = m.initial_weights(5);
  // Without leaves: two mirrored replicas see different halves of each batch, so their moving
  // statistics would differ; averaged after every step they agree (train_invariant REQUIREs
  // identical digests), and the statistics did move.
  const auto two = train_invariant(m, 2, 1, 0, "sgd");
  const size_t t = m.trainable_floats();
  CHECK(!std::equal(two.begin() + static_cast<std::ptrdiff_t>(t), two.end(), init.begin() + static_cast<std::ptrdiff_t>(t)));
}

TEST_CASE("BatchNormalization's moving statistics after a step are the mean of the replicas' own",
          "[cpu][replicas]") {
  // One step of two replicas on a batch of 64 against one replica on each half alone: the moving
  // statistics must be the mean of the two halves' (copying replica 0's everywhere would also keep
  // the replicas identical, and would fail here).
  Model m = test::model_from(R"({"input_shape": [6, 6, 1], "layers": [
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "BatchNormalization", "momentum": 0.5},
    {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})");
  const Dataset data = test::synthetic_dataset(64, 6, 6, 1, 3, 21);
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.seed = 3;
  auto stats_of = [&](int replicas, const Dataset& d, int64_t batch) {
    TrainOptions oo = o;
    oo.batch_size = batch;
    std::vector<std::unique_ptr<Backend>> owned;
    std::vector<Backend*> backends;
    for (int i = 0; i < replicas; ++i) {
      owned.push_back(make_cpu_backend(1));
      backends.push_back(owned.back().get());
    }
    Trainer t(m, backends, oo, test::test_optimizer("sgd"));
    t.set_weights(m.initial_weights(5));
    t.fit(d, nullptr, {});
    const std::vector<float> w = t.weights();
    return std::vector<float>(w.begin() + static_cast<std::ptrdiff_t>(m.trainable_floats()), w.end());
  };
  // The halves each replica sees: the epoch's shuffled order, split in two.
  const std::vector<int32_t> order = epoch_permutation(64, o.seed, 0);
  auto half = [&](int h) {
    Dataset d = data;
    d.count = 32;
    d.images.clear();
    d.labels.clear();
    for (int i = 32 * h; i < 32 * (h + 1); ++i) {
      const auto* img = data.images.data() + static_cast<size_t>(order[i]) * 36;
      d.images.insert(d.images.end(), img, img + 36);
      d.labels.push_back(data.labels[static_cast<size_t>(order[i])]);
    }
    return d;
  };
  const auto both = stats_of(2, data, 64), first = stats_of(1, half(0), 32), second = stats_of(1, half(1), 32);
  REQUIRE(both.size() == first.size());
  REQUIRE(!both.empty());
  double apart = 0;
  for (size_t i = 0; i < both.size(); ++i) {
    apart = std::max(apart, double(std::fabs(first[i] - second[i])));
    CHECK(both[i] == Approx(0.5 * (double(first[i]) + double(second[i]))).margin(1e-5));
  }
  CHECK(apart > 1e-3);  // the halves' statistics differ, so the mean is not either one
}

TEST_CASE("batch invariance: leaves that are not a power of 2 or do not split are refused",
          "[cpu][replicas][invariance]") {
  Model m = test::model_from(kInvariantCnn);
  auto b1 = make_cpu_backend(1), b2 = make_cpu_backend(1), b3 = make_cpu_backend(1), b4 = make_cpu_backend(1);
  TrainOptions o;
  o.batch_size = 96;
  o.leaves = 6;
  REQUIRE_THROWS_WITH(Trainer(m, {b1.get()}, o, OptimizerConfig{}), Contains("must be a power of 2"));
  o.leaves = 2;
  REQUIRE_THROWS_WITH(Trainer(m, {b1.get(), b2.get(), b3.get(), b4.get()}, o, OptimizerConfig{}),
                      Contains("2 leaves do not split evenly over 4 replicas"));
  o.batch_size = 99;
  o.leaves = 3 + 1;
  REQUIRE_THROWS_WITH(Trainer(m, {b1.get()}, o, OptimizerConfig{}), Contains("does not split into 4 leaves"));
  o.batch_size = 96;
  o.leaves = -2;
  REQUIRE_THROWS_AS(Trainer(m, {b1.get()}, o, OptimizerConfig{}), Error);
}

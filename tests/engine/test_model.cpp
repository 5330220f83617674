// Model specs (parsing, validation, shapes, parameter counts, summary) and training behaviour
// (determinism, global-batch equivalence, learning on synthetic data).
#include <catch2/catch.hpp>
#include <cstring>

#include "engine/errors.h"
#include "engine/trainer.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;
using Catch::Matchers::Contains;

namespace {
std::string spec_error(const std::string& text) {
  try {
    test::model_from(text);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK(e.exit_status() == 2);
    return std::string(e.what()) + " | hint: " + e.hint();
  }
  FAIL("expected an error for " << text);
  return "";
}
}  // namespace

TEST_CASE("presets have the expected shapes and parameter counts", "[cpu][model]") {
  Model mlp = Model::from_name_or_file("mlp");
  CHECK(mlp.param_count() == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10);
  CHECK(mlp.output_shape() == Shape{10});
  Model cnn = Model::from_name_or_file("cnn");
  CHECK(cnn.param_count() == (7 * 7 * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 128 + 128) + (6272 * 64 + 64) + 650);
  CHECK(cnn.layers()[4]->output_shape() == Shape{7, 7, 128});
  std::string s = cnn.summary();
  CHECK_THAT(s, Contains("conv2d_2 (Conv2D)"));
  CHECK_THAT(s, Contains("(None, 7, 7, 128)"));
  CHECK_THAT(s, Contains("Total params: 626,762"));
  CHECK_THAT(s, Contains("max_pooling2d_1 (MaxPool2D)"));
}

TEST_CASE("spec round trip: spec() rebuilds the same model", "[cpu][model]") {
  Model cnn = Model::from_name_or_file("cnn");
  Model again = Model::from_spec(cnn.spec(), "round trip");
  CHECK(again.spec() == cnn.spec());
  CHECK(again.param_count() == cnn.param_count());
}

TEST_CASE("bad model specs give one clear error each", "[cpu][model]") {
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense2", "units": 3}]})"),
             Contains("unknown layer type \"Dense2\""));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "activation": "softmax"}]})"),
             Contains("missing field \"units\""));
  CHECK_THAT(spec_error(R"({"layers": [{"type": "Dense", "units": 3, "activation": "softmax"}]})"),
             Contains("input_shape"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "activaton": "softmax"}]})"),
             Contains("unknown field \"activaton\""));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": "3"}]})"),
             Contains("must be an integer"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 0}]})"),
             Contains("out of range"));
  CHECK_THAT(spec_error(R"({"input_shape": [4, 4, 1], "layers": [{"type": "Conv2D", "filters": 2, "kernel_size": 5},
             {"type": "Flatten"}, {"type": "Dense", "units": 2, "activation": "softmax"}]})"),
             Contains("does not fit input"));
  CHECK_THAT(spec_error(R"({"input_shape": [4, 4, 1], "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]})"),
             Contains("add a Flatten"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]})"),
             Contains("softmax"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dropout", "rate": 1.5},
             {"type": "Dense", "units": 2, "activation": "softmax"}]})"),
             Contains("out of range"));
  CHECK_THAT(spec_error(R"({"input_shape": [16], "layers": [{"type": "Conv2D", "filters": 2, "kernel_size": 3},
             {"type": "Dense", "units": 2, "activation": "softmax"}]})"),
             Contains("expects an image input"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": []})"), Contains("non-empty"));
  CHECK_THAT(spec_error(R"([1, 2])"), Contains("JSON object"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "name": "a"},
             {"type": "Dense", "units": 2, "name": "a", "activation": "softmax"}]})"),
             Contains("duplicate layer name"));
  CHECK_THAT(spec_error(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "activation": "softmax"},
             {"type": "Dense", "units": 2, "activation": "softmax"}]})"),
             Contains("not the last layer"));
}

namespace {
Dataset tiny_train() { return test::synthetic_dataset(96, 6, 6, 1, 4, 1); }
const char* kTinyCnn = R"({"name": "tiny", "input_shape": [6, 6, 1], "layers": [
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "MaxPool2D", "pool_size": 2}, {"type": "Flatten"},
    {"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dropout", "rate": 0.25},
    {"type": "Dense", "units": 4, "activation": "softmax"}]})";

std::vector<float> train_weights(const Model& m, int replicas, int threads, uint64_t seed, int64_t batch,
                                 const std::string& optimizer = "sgd") {
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = batch;
  o.seed = seed;
  const OptimizerConfig opt = test::test_optimizer(optimizer);
  test::Trained t = test::train_cpu_replicas(m, replicas, threads, o, opt, tiny_train());
  REQUIRE(t.replicas_agree);  // replicas stay bit-identical
  return t.weights;
}
}  // namespace

TEST_CASE("same seed and threads give bit-identical weights; another seed does not", "[cpu][determinism]") {
  Model m = test::model_from(kTinyCnn);
  auto a = train_weights(m, 1, 2, 7, 10);
  auto b = train_weights(m, 1, 2, 7, 10);
  auto c = train_weights(m, 1, 2, 8, 10);
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("N replicas equal one replica on the same global batch (with dropout and a short last batch)",
          "[cpu][replicas]") {
  Model m = test::model_from(kTinyCnn);
  for (const char* opt : {"sgd", "adam"}) {
    auto one = train_weights(m, 1, 1, 3, 20, opt);
    for (int n : {2, 4}) {
      auto many = train_weights(m, n, 1, 3, 20, opt);
      double max_abs = 0, ref = 0;
      for (size_t i = 0; i < one.size(); ++i) {
        max_abs = std::max(max_abs, std::fabs(double(one[i]) - many[i]));
        ref = std::max(ref, std::fabs(double(one[i])));
      }
      INFO(opt << " with " << n << " replicas: max abs diff " << max_abs);
      CHECK(max_abs / ref < 1e-4);
    }
  }
}

TEST_CASE("a batch size that does not split over the replicas is refused", "[cpu][replicas]") {
  Model m = test::model_from(kTinyCnn);
  auto b1 = make_cpu_backend(1), b2 = make_cpu_backend(1), b3 = make_cpu_backend(1);
  TrainOptions o;
  o.batch_size = 10;
  REQUIRE_THROWS_WITH(Trainer(m, {b1.get(), b2.get(), b3.get()}, o, OptimizerConfig{}),
                      Contains("does not split evenly over 3 replicas"));
  o.batch_size = 0;
  REQUIRE_THROWS_AS(Trainer(m, {b1.get()}, o, OptimizerConfig{}), Error);
}

TEST_CASE("training learns a separable problem and predict returns probabilities", "[cpu][training]") {
  // Class = which quadrant is bright: easy for the tiny CNN.
  Dataset d = test::synthetic_dataset(400, 6, 6, 1, 4, 2);
  for (int64_t i = 0; i < d.count; ++i) {
    int cls = d.labels[i] % 4;
    for (int y = 0; y < 6; ++y)
      for (int x = 0; x < 6; ++x) {
        bool bright = (y >= 3) == bool(cls & 1) && (x >= 3) == bool(cls & 2);
        d.images[i * 36 + y * 6 + x] = static_cast<uint8_t>(bright ? 200 + d.images[i * 36 + y * 6 + x] % 56
                                                                    : d.images[i * 36 + y * 6 + x] % 60);
      }
  }
  Model m = test::model_from(kTinyCnn);
  auto backend = make_cpu_backend(2);
  TrainOptions o;
  o.epochs = 5;
  o.batch_size = 16;
  OptimizerConfig opt;
  opt.lr = 0.05;
  opt.momentum = 0.9;
  Trainer t(m, {backend.get()}, o, opt);
  auto logs = t.fit(d, &d, {});
  REQUIRE(logs.size() == 5);
  CHECK(logs.back().loss < logs.front().loss);
  CHECK(logs.back().val_accuracy > 0.9);
  auto probs = t.predict(d, 5);
  REQUIRE(probs.size() == 20);
  for (int i = 0; i < 5; ++i) {
    double s = 0;
    for (int k = 0; k < 4; ++k) s += probs[i * 4 + k];
    CHECK(s == Approx(1.0).epsilon(1e-5));
  }
  // One-hot labels train to the same place as sparse labels.
  o.one_hot = true;
  Trainer t2(m, {backend.get()}, o, opt);
  auto logs2 = t2.fit(d, &d, {});
  CHECK(logs2.back().loss == Approx(logs.back().loss).epsilon(1e-4));
}

namespace {
// Takes the trainer's state after global step `at` (as BackupAndRestore's --checkpoint-every does).
struct StateAt : Callback {
  Trainer* trainer = nullptr;
  int64_t at = 0;
  TrainerState state;
  bool taken = false;
  void on_batch_end(const BatchLog& log) override {
    if (log.global_step == at) {
      state = trainer->state();
      taken = true;
    }
  }
};
}  // namespace

TEST_CASE("a checkpoint from an epoch's last batch resumes to the uninterrupted weights", "[cpu][training]") {
  const Model m = test::model_from(R"({"input_shape": [6, 6, 1], "layers": [{"type": "Flatten"},
    {"type": "Dense", "units": 8, "activation": "relu"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})");
  const Dataset data = test::synthetic_dataset(64, 6, 6, 1, 3, 4);
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 16;  // 4 steps per epoch
  o.seed = 9;
  auto b1 = make_cpu_backend(1), b2 = make_cpu_backend(1);
  for (int64_t at : {4, 6}) {  // the end of epoch 1, and mid-epoch 2
    Trainer whole(m, {b1.get()}, o, test::test_optimizer("adam"));
    StateAt cp;
    cp.trainer = &whole;
    cp.at = at;
    const auto logs = whole.fit(data, &data, {&cp});
    REQUIRE(cp.taken);
    CHECK(cp.state.epoch_step == (at == 4 ? 4 : 2));
    Trainer resumed(m, {b2.get()}, o, test::test_optimizer("adam"));
    resumed.restore(cp.state);
    const auto rest = resumed.fit(data, &data, {});
    REQUIRE(rest.size() == (at == 4 ? 3u : 2u));  // the resumed epoch's end is logged too
    CHECK(rest.back().val_loss == logs.back().val_loss);
    const std::vector<float> a = resumed.weights(), b = whole.weights();
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
}

// Finite-difference gradient checks for every layer and both losses, through the whole model
// (so each layer's input gradient is checked via the parameters of the layer before it).
#include <catch2/catch.hpp>
#include <cmath>

#include "engine/replica.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;

namespace {

struct Harness {
  Model model;
  std::unique_ptr<Backend> backend = make_cpu_backend(1);
  Dataset data;
  std::unique_ptr<Replica> rep;
  ResidentData rd;
  std::vector<int32_t> index;
  bool one_hot;

  Harness(const std::string& spec, int h, int w, int c, bool onehot, int64_t batch = 4)
      : model(test::model_from(spec)), data(test::synthetic_dataset(batch, h, w, c, 3, 11)), one_hot(onehot) {
    rep = std::make_unique<Replica>(model, *backend, batch);
    auto init = model.initial_weights(5);
    // Non-zero biases and BN shifts, so their gradients are exercised away from zero.
    CounterRng rng(3, 3);
    for (const auto& p : model.params())
      if (p.spec.init == Init::Zeros && p.spec.trainable)
        for (int64_t i = 0; i < p.shape.numel(); ++i) init[p.offset + i] = 0.2f * (rng.uniform() - 0.5f);
    rep->set_weights(init);
    rd.images = data.images.data();
    rd.labels = data.labels.data();
    rd.count = data.count;
    rd.sample_elems = data.sample_elems();
    rd.num_classes = 3;
    for (int64_t i = 0; i < batch; ++i) index.push_back(static_cast<int32_t>(i));
    rep->load_batch(rd, index.data(), batch, one_hot);
  }
  StepContext ctx() {
    StepContext c;
    c.backend = backend.get();
    c.batch = data.count;
    c.training = true;
    c.seed = 9;
    c.step = 1;
    return c;
  }
  // Mean loss over the batch.
  double loss() {
    rep->reset_metrics();
    rep->forward(ctx());
    rep->loss(data.count, 1.f / float(data.count), one_hot, false);
    double l, acc;
    rep->read_metrics(&l, &acc);
    return l / double(data.count);
  }
  std::vector<float> analytic() {
    rep->reset_metrics();
    rep->forward(ctx());
    rep->loss(data.count, 1.f / float(data.count), one_hot, true);
    rep->backward(ctx());
    return std::vector<float>(rep->grads(), rep->grads() + model.trainable_floats());
  }
};

// Central differences in double around float weights; compares every trainable parameter
// (or a stride of them for large tensors).
void check_gradients(Harness& h, double tol = 2e-2) {
  std::vector<float> g = h.analytic();
  std::vector<float> w = h.rep->weights();
  int checked = 0, kinks = 0;
  for (const auto& p : h.model.params()) {
    if (!p.spec.trainable) continue;
    const int64_t n = p.shape.numel();
    const int64_t stride = std::max<int64_t>(1, n / 40);
    for (int64_t i = 0; i < n; i += stride) {
      const size_t k = p.offset + static_cast<size_t>(i);
      const float eps = 3e-4f * std::max(1.f, std::fabs(w[k]));
      float orig = w[k];
      w[k] = orig + eps;
      h.rep->set_weights(w);
      double lp = h.loss();
      w[k] = orig - eps;
      h.rep->set_weights(w);
      double lm = h.loss();
      w[k] = orig;
      h.rep->set_weights(w);
      double l0 = h.loss();
      // A ReLU or max-pool kink inside [w-eps, w+eps] makes finite differences meaningless there:
      // the one-sided slopes then disagree. Such points are counted and skipped.
      double fwd = (lp - l0) / eps, bwd = (l0 - lm) / eps;
      if (std::fabs(fwd - bwd) > 0.05 * (std::fabs(fwd) + std::fabs(bwd)) + 1e-3) {
        ++kinks;
        continue;
      }
      double numeric = (lp - lm) / (2.0 * eps);
      double err = std::fabs(numeric - g[k]) / std::max(1e-2, std::fabs(numeric) + std::fabs(g[k]));
      INFO(p.name << "[" << i << "] analytic " << g[k] << " numeric " << numeric);
      CHECK(err < tol);
      ++checked;
    }
  }
  CHECK(checked > 0);
  CHECK(kinks * 5 < checked);  // nearly every point is smooth
}

const char* kDenseTail = R"({"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"})";

std::string conv_spec(const std::string& middle) {
  return std::string(R"({"input_shape": [6, 6, 2], "layers": [
      {"type": "Conv2D", "filters": 3, "kernel_size": 3, "padding": "same", "activation": "linear"},)") +
         middle + "," + kDenseTail + "]}";
}

}  // namespace

TEST_CASE("gradients: Dense with relu and softmax cross-entropy (sparse labels)", "[cpu][gradients]") {
  Harness h(R"({"input_shape": [3, 3, 1], "layers": [{"type": "Flatten"},
      {"type": "Dense", "units": 5, "activation": "relu"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})",
            3, 3, 1, false);
  check_gradients(h);
}

TEST_CASE("gradients: categorical cross-entropy with one-hot labels", "[cpu][gradients]") {
  Harness h(R"({"input_shape": [3, 3, 1], "layers": [{"type": "Flatten"},
      {"type": "Dense", "units": 4}, {"type": "Dense", "units": 3, "activation": "softmax"}]})",
            3, 3, 1, true);
  check_gradients(h);
}

TEST_CASE("gradients: Conv2D same and valid, strided, with relu", "[cpu][gradients]") {
  Harness a(conv_spec(R"({"type": "Conv2D", "filters": 4, "kernel_size": [3, 2], "strides": 2, "padding": "same", "activation": "relu"})"),
            6, 6, 2, false);
  check_gradients(a);
  Harness b(conv_spec(R"({"type": "Conv2D", "filters": 2, "kernel_size": 2, "padding": "valid"})"), 6, 6, 2, false);
  check_gradients(b);
}

TEST_CASE("gradients: MaxPool2D", "[cpu][gradients]") {
  Harness a(conv_spec(R"({"type": "MaxPool2D", "pool_size": 2})"), 6, 6, 2, false);
  check_gradients(a);
  Harness b(conv_spec(R"({"type": "MaxPool2D", "pool_size": 3, "strides": 2, "padding": "same"})"), 6, 6, 2, false);
  check_gradients(b);
}

TEST_CASE("gradients: ReLU and Activation layers", "[cpu][gradients]") {
  Harness h(conv_spec(R"({"type": "ReLU"}, {"type": "Activation", "activation": "linear"})"), 6, 6, 2, false);
  check_gradients(h);
}

TEST_CASE("gradients: Dropout (fixed mask for a fixed step)", "[cpu][gradients]") {
  Harness h(conv_spec(R"({"type": "Dropout", "rate": 0.3})"), 6, 6, 2, false);
  check_gradients(h);
}

TEST_CASE("gradients: BatchNormalization in training mode (image and flat)", "[cpu][gradients]") {
  Harness a(conv_spec(R"({"type": "BatchNormalization"})"), 6, 6, 2, false, 6);
  check_gradients(a);
  Harness b(R"({"input_shape": [3, 3, 1], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 4},
      {"type": "BatchNormalization", "epsilon": 0.01}, {"type": "Dense", "units": 3, "activation": "softmax"}]})",
            3, 3, 1, false, 6);
  check_gradients(b);
}

TEST_CASE("gradients: a Softmax layer after a linear Dense", "[cpu][gradients]") {
  Harness h(R"({"input_shape": [2, 2, 1], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 3},
      {"type": "Softmax"}]})",
            2, 2, 1, false);
  check_gradients(h);
}

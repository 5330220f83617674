// The optimizers over whole arenas, several steps, against an independent double-precision
// reference of Keras's rules (SGD, momentum, Nesterov; Adam with its bias correction), through the
// Optimizer class the trainer uses, on every CPU thread count; and the learning-rate schedules.
// One element or one step would miss what matters: Adam's first step moves every weight by lr *
// sign(g) whatever beta1 and beta2 are, so a swap of the two shows only from the second step on.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "engine/optimizer.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;

namespace {

constexpr size_t kN = 1003;  // not a multiple of any chunk or vector width
constexpr int kSteps = 7;

// kN values uniform in [-scale, scale), from `seed`.
std::vector<float> values(uint64_t seed, float scale) {
  std::vector<float> v = test::random_floats(kN, seed);
  for (float& x : v) x *= scale;
  return v;
}

// Keras's rules in double precision, written from its documentation, not from our kernels.
struct Reference {
  OptimizerConfig c;
  std::vector<double> w, a, b;  // a: velocity or m; b: v
  Reference(const OptimizerConfig& config, const std::vector<float>& w0)
      : c(config), w(w0.begin(), w0.end()), a(w0.size(), 0.0), b(w0.size(), 0.0) {}
  void step(const std::vector<float>& g, int64_t t) {  // t: updates already applied
    const double lr = c.learning_rate(t);
    for (size_t i = 0; i < w.size(); ++i) {
      const double gi = g[i];
      if (c.name == "sgd") {
        if (c.momentum == 0) {
          w[i] -= lr * gi;
        } else {
          a[i] = c.momentum * a[i] - lr * gi;  // velocity
          w[i] += c.nesterov ? c.momentum * a[i] - lr * gi : a[i];
        }
      } else {
        a[i] = c.beta1 * a[i] + (1 - c.beta1) * gi;
        b[i] = c.beta2 * b[i] + (1 - c.beta2) * gi * gi;
        const double k = double(t + 1);
        const double lr_t = lr * std::sqrt(1 - std::pow(c.beta2, k)) / (1 - std::pow(c.beta1, k));
        w[i] -= lr_t * a[i] / (std::sqrt(b[i]) + c.epsilon);
      }
    }
  }
};

// Runs `config` for kSteps updates of a kN-float arena with a new gradient each step; returns the
// largest relative difference from the reference, over the weights and every slot.
double worst_difference(const OptimizerConfig& config, int threads) {
  auto backend = make_cpu_backend(threads);
  Optimizer opt(config, *backend, kN);
  std::vector<float> w = values(11, 1.0f);
  Reference ref(config, w);
  float* dw = static_cast<float*>(backend->allocate(kN * sizeof(float)));
  float* dg = static_cast<float*>(backend->allocate(kN * sizeof(float)));
  backend->upload(dw, w.data(), kN * sizeof(float));
  for (int t = 0; t < kSteps; ++t) {
    // Gradients that change size and sign from step to step.
    std::vector<float> g = values(100 + t, t % 2 ? 0.5f : 3.0f);
    backend->upload(dg, g.data(), kN * sizeof(float));
    opt.apply(dw, dg, t);
    ref.step(g, t);
  }
  double worst = 0;
  auto compare = [&](const float* device, const std::vector<double>& want) {
    std::vector<float> got(kN);
    backend->download(got.data(), device, kN * sizeof(float));
    for (size_t i = 0; i < kN; ++i) worst = std::max(worst, std::fabs(got[i] - want[i]) / (1e-3 + std::fabs(want[i])));
  };
  compare(dw, ref.w);
  if (opt.slots().size() >= 1) compare(opt.slots()[0], ref.a);
  if (opt.slots().size() >= 2) compare(opt.slots()[1], ref.b);
  backend->deallocate(dw);
  backend->deallocate(dg);
  return worst;
}

OptimizerConfig sgd(double momentum, bool nesterov) {
  OptimizerConfig c;
  c.name = "sgd";
  c.lr = 0.05;
  c.momentum = momentum;
  c.nesterov = nesterov;
  return c;
}

}  // namespace

TEST_CASE("optimizers: whole arenas over several steps equal Keras's rules", "[cpu][optimizer]") {
  OptimizerConfig adam;
  adam.name = "adam";
  adam.lr = 0.01;
  OptimizerConfig adam_other = adam;  // unequal, non-default betas: a swap of the two shows
  adam_other.beta1 = 0.8;
  adam_other.beta2 = 0.95;
  adam_other.epsilon = 1e-4;
  OptimizerConfig decayed = sgd(0.9, true);
  decayed.schedule = {"exponential", 0.5, 3};
  OptimizerConfig stepped = adam_other;
  stepped.schedule = {"step", 0.1, 2};
  const std::vector<std::pair<std::string, OptimizerConfig>> cases = {{"sgd", sgd(0, false)},
                                                                      {"sgd momentum", sgd(0.9, false)},
                                                                      {"sgd nesterov", sgd(0.9, true)},
                                                                      {"adam", adam},
                                                                      {"adam beta1 0.8 beta2 0.95", adam_other},
                                                                      {"sgd nesterov, exponential decay", decayed},
                                                                      {"adam, step decay", stepped}};
  for (const auto& [name, config] : cases)
    for (int threads : {1, 3}) {
      INFO(name << ", " << threads << " thread(s)");
      CHECK(worst_difference(config, threads) < 1e-4);  // float against double; a wrong rule is off by > 1e-2
    }
}

TEST_CASE("optimizers: the reference is not blind (a swapped beta1/beta2 is caught after step 1)", "[cpu][optimizer]") {
  OptimizerConfig right;
  right.name = "adam";
  right.lr = 0.01;
  right.beta1 = 0.8;
  right.beta2 = 0.95;
  OptimizerConfig swapped = right;
  std::swap(swapped.beta1, swapped.beta2);
  // Run the swapped configuration on the backend and compare it with the right reference.
  auto backend = make_cpu_backend(1);
  Optimizer opt(swapped, *backend, kN);
  std::vector<float> w = values(11, 1.0f);
  Reference ref(right, w);
  float* dw = static_cast<float*>(backend->allocate(kN * sizeof(float)));
  float* dg = static_cast<float*>(backend->allocate(kN * sizeof(float)));
  backend->upload(dw, w.data(), kN * sizeof(float));
  std::vector<double> diff_after;
  for (int t = 0; t < 3; ++t) {
    std::vector<float> g = values(100 + t, t % 2 ? 0.5f : 3.0f);
    backend->upload(dg, g.data(), kN * sizeof(float));
    opt.apply(dw, dg, t);
    ref.step(g, t);
    std::vector<float> got(kN);
    backend->download(got.data(), dw, kN * sizeof(float));
    double worst = 0;
    for (size_t i = 0; i < kN; ++i) worst = std::max(worst, std::fabs(got[i] - ref.w[i]));
    diff_after.push_back(worst);
  }
  CHECK(diff_after[0] < 1e-5);  // step 1: indistinguishable
  CHECK(diff_after[2] > 1e-3);  // step 3: caught
  backend->deallocate(dw);
  backend->deallocate(dg);
}

TEST_CASE("optimizers: learning-rate schedules", "[cpu][optimizer]") {
  OptimizerConfig c;
  c.lr = 0.1;
  CHECK(c.learning_rate(0) == 0.1);
  CHECK(c.learning_rate(1000) == 0.1);
  c.schedule = {"exponential", 0.5, 4};  // lr * 0.5^(step / 4), continuously
  CHECK(c.learning_rate(0) == Approx(0.1));
  CHECK(c.learning_rate(2) == Approx(0.1 * std::pow(0.5, 0.5)));
  CHECK(c.learning_rate(4) == Approx(0.05));
  CHECK(c.learning_rate(12) == Approx(0.0125));
  c.schedule = {"step", 0.1, 3};  // lr * 0.1^floor(step / 3)
  CHECK(c.learning_rate(2) == Approx(0.1));
  CHECK(c.learning_rate(3) == Approx(0.01));
  CHECK(c.learning_rate(8) == Approx(0.001));
  c.lr_factor = 0.5;  // ReduceLROnPlateau's factor multiplies the schedule
  CHECK(c.learning_rate(8) == Approx(0.0005));
}

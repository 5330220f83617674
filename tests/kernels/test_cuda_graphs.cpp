// CUDA Graphs ([gpu]; skipped without a GPU): a training step captured once and replayed must
// train exactly as eager steps: the same kernels read this step's indices, dropout counters and
// learning rate from the record block instead of their captured arguments.
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "engine/trainer.h"
#include "gpu_support.h"
#include "test_support.h"

using namespace tandem;

namespace {

const char* kDropoutCnn = R"({"name": "graphs", "input_shape": [8, 8, 1], "layers": [
    {"type": "Conv2D", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "MaxPool2D", "pool_size": 2}, {"type": "Flatten"},
    {"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dropout", "rate": 0.3},
    {"type": "Dense", "units": 5, "activation": "softmax"}]})";

// Three epochs of 100 samples in batches of 16 (six full batches, then a short one of 4) on `gpu`,
// so that full batches are run eagerly once, captured once and replayed 16 times. One backend for
// every run: convolution algorithms are timed on first use and must be the same in the runs compared.
std::vector<float> train(Backend& gpu, const Model& m, const OptimizerConfig& opt, bool graphs) {
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 16;
  o.seed = 21;
  o.cuda_graphs = graphs;
  Trainer t(m, {&gpu}, o, opt);
  Dataset d = test::synthetic_dataset(100, 8, 8, 1, 5, 8);
  auto logs = t.fit(d, nullptr, {});
  REQUIRE(logs.size() == 3);
  return t.weights();
}

}  // namespace

TEST_CASE("cuda graphs: replayed steps train exactly as eager ones", "[gpu][graphs]") {
  if (!test::gpu_or_skip()) return;
  Model m = test::model_from(kDropoutCnn);
  auto gpu = test::make_gpu_backend(0);
  REQUIRE(gpu);
  OptimizerConfig sgd;  // a learning rate that changes every step
  sgd.lr = 0.05;
  sgd.momentum = 0.9;
  sgd.nesterov = true;
  sgd.schedule.type = "exponential";
  sgd.schedule.decay_rate = 0.9;
  sgd.schedule.decay_steps = 3;
  OptimizerConfig adam;  // a bias correction that changes every step
  adam.name = "adam";
  adam.lr = 0.01;
  for (const OptimizerConfig& opt : {sgd, adam}) {
    INFO("optimizer " << opt.name);
    const auto before = gpu->step_graph_counts();
    const auto eager = train(*gpu, m, opt, false);
    const auto after_eager = gpu->step_graph_counts();
    CHECK(after_eager.captured == before.captured);  // --cuda-graphs off: nothing captured or replayed
    CHECK(after_eager.replayed == before.replayed);
    const auto graphs = train(*gpu, m, opt, true);
    const auto after_graphs = gpu->step_graph_counts();
    // The full batches were captured once and replayed 16 times (the short last batch of each
    // epoch has a graph of its own, captured in epoch 2 and replayed in epoch 3).
    CHECK(after_graphs.captured - after_eager.captured >= 1);
    CHECK(after_graphs.replayed - after_eager.replayed >= 16);
    REQUIRE(eager.size() == graphs.size());
    size_t differing = 0;
    for (size_t i = 0; i < eager.size(); ++i) differing += eager[i] != graphs[i];
    CHECK(differing == 0);
    // And the graph path keeps training: a second graph run from scratch gives the same bits.
    CHECK(train(*gpu, m, opt, true) == graphs);
  }
}

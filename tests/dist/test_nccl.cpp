// NCCL on the GPU ([gpu]; skipped without a GPU or without NCCL in the build): the multi-worker
// gradient sync run by a one-process job, and the mirrored local reduce over this machine's GPUs.
// The multi-rank paths are exercised under mpirun by tools/gpu-check (4b) and tests/mpi/.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/nccl_gradient_sync.h"
#include "engine/rng.h"
#include "engine/trainer.h"
#include "gpu_support.h"
#include "test_support.h"

using namespace tandem;

namespace {

// A job of one process: every collective is the identity.
class SoloCommunicator : public Communicator {
 public:
  std::string name() const override { return "solo"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  int nodes() const override { return 1; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void tree_all_reduce_sum(float*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void all_gather(const void* in, size_t bytes, void* out) override { std::memcpy(out, in, bytes); }
  void barrier() override {}
  void node_broadcast(void*, size_t) override {}
  void cross_node_all_reduce_sum(float*, size_t) override {}
  void start_watchdog(double) override {}
  void note_step(uint64_t) override {}
  std::string ranks_behind(uint64_t) override { return ""; }
  void set_abort_hook(std::function<void()>) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

bool nccl_or_skip() {
  if (!test::gpu_or_skip()) return false;
  if (nccl_available()) return true;
  std::printf("SKIPPED: this build has no NCCL\n");
  WARN("SKIPPED: this build has no NCCL");
  return false;
}

const char* kSmallCnn = R"({"name": "small", "input_shape": [8, 8, 1], "layers": [
    {"type": "Conv2D", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "MaxPool2D", "pool_size": 2}, {"type": "Flatten"},
    {"type": "Dense", "units": 16, "activation": "relu"},
    {"type": "Dense", "units": 5, "activation": "softmax"}]})";

// Two epochs of SGD with momentum on `gpu`, batch 16 over 100 samples (the last batch is short).
// The runs compared share one backend: its convolution algorithms, chosen by timing on first use,
// are then the same in every run (another backend may time them differently).
std::vector<float> train_on_gpu(Backend& gpu, const Model& m,
                                const std::function<std::unique_ptr<GradientSync>(Backend&)>& sync) {
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 16;
  o.seed = 11;
  OptimizerConfig opt;
  opt.name = "sgd";
  opt.lr = 0.05;
  opt.momentum = 0.9;
  auto s = sync ? sync(gpu) : nullptr;
  Trainer t(m, {&gpu}, o, opt, s.get());
  Dataset d = test::synthetic_dataset(100, 8, 8, 1, 5, 4);
  t.fit(d, nullptr, {});
  return t.weights();
}

}  // namespace

TEST_CASE("nccl: a one-rank multi-worker sync trains exactly as no sync", "[gpu][nccl]") {
  if (!nccl_or_skip()) return;
  Model m = test::model_from(kSmallCnn);
  auto gpu = test::make_gpu_backend(0);
  REQUIRE(gpu);
  const auto plain = train_on_gpu(*gpu, m, nullptr);
  SoloCommunicator solo;
  for (bool overlap : {true, false}) {
    for (size_t bucket_bytes : {size_t{256}, size_t{25} << 20}) {
      INFO("overlap " << overlap << ", bucket bytes " << bucket_bytes);
      const auto synced = train_on_gpu(*gpu, m, [&](Backend& b) {
        return make_nccl_gradient_sync(solo, m, b, bucket_bytes, overlap, 60.0);
      });
      REQUIRE(synced.size() == plain.size());
      // A sum over one rank is a copy: every weight is the same float.
      size_t differing = 0;
      for (size_t i = 0; i < plain.size(); ++i) differing += synced[i] != plain[i];
      CHECK(differing == 0);
    }
  }
}

TEST_CASE("nccl: the mirrored local reduce sums every GPU's gradients into each", "[gpu][nccl]") {
  if (!nccl_or_skip()) return;
  const int gpus = std::min(test::gpu_count(), 8);
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (int i = 0; i < gpus; ++i) {
    owned.push_back(test::make_gpu_backend(i));
    backends.push_back(owned.back().get());
  }
  auto reduce = make_nccl_local_reduce(backends);
  const size_t n = 100003;  // odd, not a multiple of any chunk size
  CounterRng rng(5, 9);
  std::vector<std::vector<float>> host(static_cast<size_t>(gpus), std::vector<float>(n));
  std::vector<float*> grads;
  std::vector<double> expected(n, 0.0);
  for (int g = 0; g < gpus; ++g) {
    for (size_t i = 0; i < n; ++i) {
      host[static_cast<size_t>(g)][i] = static_cast<float>(rng.uniform() * 2.0 - 1.0);
      expected[i] += host[static_cast<size_t>(g)][i];
    }
    auto* p = static_cast<float*>(backends[static_cast<size_t>(g)]->allocate(n * sizeof(float)));
    backends[static_cast<size_t>(g)]->upload(p, host[static_cast<size_t>(g)].data(), n * sizeof(float));
    grads.push_back(p);
  }
  reduce->all_reduce(backends, grads, n);
  std::vector<float> first;
  for (int g = 0; g < gpus; ++g) {
    std::vector<float> got(n);
    backends[static_cast<size_t>(g)]->download(got.data(), grads[static_cast<size_t>(g)], n * sizeof(float));
    backends[static_cast<size_t>(g)]->synchronize();
    double worst = 0;
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(got[i] - expected[i]));
    INFO("gpu " << g << " of " << gpus);
    CHECK(worst <= 1e-5 * gpus);
    if (g == 0)
      first = got;
    else
      CHECK(got == first);  // every replica ends with the same bits
    backends[static_cast<size_t>(g)]->deallocate(grads[static_cast<size_t>(g)]);
  }
}

// Gradient buckets (dist/host_gradient_sync.h): planning (buckets tile the trainable arena exactly,
// last layer first, split only where a layer's parameters begin, each at least the bucket size
// except the one that reaches the first layer), and the hand-off to the communication thread,
// on ranks that are threads of this process (tests/fake_communicator.h).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dist/host_gradient_sync.h"
#include "engine/model.h"
#include "fake_communicator.h"
#include "kernels/backends.h"
#include "test_support.h"

using namespace tandem;

TEST_CASE("plan_buckets tiles the arena at layer boundaries, last layer first", "[cpu][dist]") {
  const Model m = test::model_from(R"({"input_shape": [12, 12, 1], "layers": [
    {"type": "Conv2D", "filters": 8, "kernel_size": 3, "activation": "relu"}, {"type": "BatchNormalization"},
    {"type": "Flatten"}, {"type": "Dense", "units": 64, "activation": "relu"},
    {"type": "Dense", "units": 32, "activation": "relu"}, {"type": "Dense", "units": 10, "activation": "softmax"}]})");
  std::set<size_t> layer_starts;
  int last = -1;
  for (const auto& p : m.params())
    if (p.spec.trainable && p.layer != last) {
      layer_starts.insert(p.offset);
      last = p.layer;
    }
  const size_t t = m.trainable_floats();
  for (size_t bytes : {size_t(4), size_t(1000), size_t(8000), size_t(40000), size_t(1) << 30}) {
    INFO("bucket bytes " << bytes);
    const std::vector<Bucket> b = plan_buckets(m, bytes);
    REQUIRE(!b.empty());
    CHECK(b.front().end == t);  // the last layer's gradients come first
    CHECK(b.back().begin == 0);
    for (size_t i = 0; i < b.size(); ++i) {
      CHECK(b[i].begin < b[i].end);
      if (i + 1 < b.size()) {
        CHECK(b[i + 1].end == b[i].begin);           // contiguous, descending, no gap or overlap
        CHECK(layer_starts.count(b[i].begin) == 1);  // split where a layer's parameters begin
        CHECK((b[i].end - b[i].begin) * sizeof(float) >= bytes);
      }
    }
    if (bytes >= t * sizeof(float)) CHECK(b.size() == 1);
    if (bytes == 4) CHECK(b.size() == layer_starts.size());  // one bucket per layer with weights
  }
}

namespace {

// Every rank's gradient value k at step s: distinct per rank, step and element.
float grad_value(int rank, int step, size_t k) {
  return float((k * 7 + static_cast<size_t>(rank) * 131 + static_cast<size_t>(step) * 17) % 97) * 0.125f - 6.0f;
}

// `ranks` ranks on threads run `steps` steps of the bucketed all-reduce the way backward drives it:
// buckets handed over one at a time (last layer first) with the compute thread pausing between
// them, then all_reduce_gradients. Returns whether every rank got the exact sums every step.
bool bucketed_sums_are_exact(int ranks, bool overlap, bool tree, int steps) {
  const std::vector<Bucket> buckets = {{700, 1000}, {300, 700}, {40, 300}, {0, 40}};
  const size_t n = 1000;
  test::FakeHub hub(ranks);
  std::vector<std::string> failures(static_cast<size_t>(ranks));
  std::vector<std::vector<std::string>> logs(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      test::FakeCommunicator comm(hub, r);
      auto cpu = make_cpu_backend(1);
      HostGradientSync sync(comm, buckets, overlap, 60);
      sync.set_tree(tree);
      std::vector<float> g(n);
      try {
        for (int s = 0; s < steps && failures[static_cast<size_t>(r)].empty(); ++s) {
          for (size_t k = 0; k < n; ++k) g[k] = grad_value(r, s, k);
          sync.begin_step(*cpu, g.data(), n, static_cast<uint64_t>(s));
          for (size_t b = 0; b + 1 < buckets.size(); ++b) {
            std::this_thread::sleep_for(std::chrono::microseconds((r * 37 + s * 11 + static_cast<int>(b) * 5) % 300));
            sync.layer_done(buckets[b].begin);
          }
          sync.all_reduce_gradients(*cpu, g.data(), n);
          for (size_t k = 0; k < n; ++k) {
            float want = 0;
            if (tree) {
              std::vector<float> level;
              for (int q = 0; q < ranks; ++q) level.push_back(grad_value(q, s, k));
              while (level.size() > 1) {
                std::vector<float> next;
                for (size_t i = 0; i + 1 < level.size(); i += 2) next.push_back(level[i] + level[i + 1]);
                level.swap(next);
              }
              want = level[0];
            } else {
              for (int q = 0; q < ranks; ++q) want += grad_value(q, s, k);
            }
            if (std::memcmp(&g[k], &want, sizeof(float)) != 0) {
              failures[static_cast<size_t>(r)] = "step " + std::to_string(s) + " element " + std::to_string(k);
              break;
            }
          }
        }
      } catch (const std::exception& e) {
        failures[static_cast<size_t>(r)] = e.what();
      }
      logs[static_cast<size_t>(r)] = comm.log();
    });
  for (auto& t : threads) t.join();
  bool ok = true;
  for (int r = 0; r < ranks; ++r) {
    INFO("rank " << r << ": " << failures[static_cast<size_t>(r)]);
    CHECK(failures[static_cast<size_t>(r)].empty());
    ok = ok && failures[static_cast<size_t>(r)].empty();
    // Every rank entered the same collectives in the same order: one per bucket per step.
    CHECK(logs[static_cast<size_t>(r)] == logs[0]);
  }
  CHECK(logs[0].size() == buckets.size() * static_cast<size_t>(steps));
  return ok;
}

}  // namespace

TEST_CASE("the communication thread's hand-off: exact sums, buckets in order, on every rank", "[cpu][dist]") {
  for (bool overlap : {true, false}) {
    INFO("overlap " << overlap);
    CHECK(bucketed_sums_are_exact(3, overlap, false, 25));
    CHECK(bucketed_sums_are_exact(4, overlap, true, 25));  // --batch-invariant's tree
  }
}

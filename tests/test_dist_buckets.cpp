// Gradient bucket planning (dist/bucketed_allreduce.h): buckets tile the trainable arena exactly,
// last layer first, split only where a layer's parameters begin, each at least the bucket size
// except the one that reaches the first layer.
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "dist/bucketed_allreduce.h"
#include "engine/model.h"
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
        CHECK(b[i + 1].end == b[i].begin);  // contiguous, descending, no gap or overlap
        CHECK(layer_starts.count(b[i].begin) == 1);  // split where a layer's parameters begin
        CHECK((b[i].end - b[i].begin) * sizeof(float) >= bytes);
      }
    }
    if (bytes >= t * sizeof(float)) CHECK(b.size() == 1);
    if (bytes == 4) CHECK(b.size() == layer_starts.size());  // one bucket per layer with weights
  }
}

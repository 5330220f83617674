// Small helpers shared by the engine tests: synthetic datasets and model construction.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/model.h"
#include "engine/rng.h"

namespace tandem::test {

// `count` random images of shape (h, w, c) with labels in [0, classes); seeded.
inline Dataset synthetic_dataset(int64_t count, int h, int w, int c, int classes, uint64_t seed) {
  Dataset d;
  d.sample_shape = Shape{h, w, c};
  d.count = count;
  d.num_classes = classes;
  CounterRng rng(seed, 7);
  d.images.resize(static_cast<size_t>(count * h * w * c));
  for (auto& p : d.images) p = static_cast<uint8_t>(rng.below(256));
  d.labels.resize(static_cast<size_t>(count));
  for (auto& l : d.labels) l = static_cast<uint8_t>(rng.below(static_cast<uint64_t>(classes)));
  return d;
}

inline Model model_from(const std::string& json_text) {
  return Model::from_spec(nlohmann::json::parse(json_text), "test spec");
}

}  // namespace tandem::test

// Models and weights shared by the export tests: a model with every layer type, seeded weights
// with non-trivial BatchNormalization statistics, and a source model version on disk.
#pragma once
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/model.h"
#include "storage/model_dir.h"
#include "temp_dir.h"

namespace tandem::test {

// Every layer type, both paddings, strides, with and without bias, BN on images and on vectors.
constexpr const char* kAllLayersSpec = R"({
  "name": "all_layers",
  "input_shape": [28, 28, 1],
  "layers": [
    {"type": "Conv2D", "name": "c1", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "BatchNormalization", "name": "bn1"},
    {"type": "ReLU", "name": "r1"},
    {"type": "MaxPool2D", "name": "p1", "pool_size": 2},
    {"type": "Conv2D", "name": "c2", "filters": 6, "kernel_size": [3, 2], "strides": 2, "padding": "same",
     "use_bias": false},
    {"type": "MaxPool2D", "name": "p2", "pool_size": 3, "strides": 2, "padding": "same"},
    {"type": "Dropout", "name": "d1", "rate": 0.25},
    {"type": "Flatten", "name": "f"},
    {"type": "Dense", "name": "h", "units": 8, "use_bias": false},
    {"type": "BatchNormalization", "name": "bn2", "epsilon": 0.01},
    {"type": "Activation", "name": "a1", "activation": "relu"},
    {"type": "Activation", "name": "lin", "activation": "linear"},
    {"type": "Dense", "name": "out", "units": 10, "activation": "softmax"}
  ]})";

inline Model all_layers_model() { return Model::from_spec(nlohmann::json::parse(kAllLayersSpec), "test spec"); }

// Seeded weights with non-trivial BatchNormalization statistics.
inline std::vector<NamedTensor> weights_of(const Model& m, uint64_t seed = 5) {
  std::vector<NamedTensor> t = m.to_tensors(m.initial_weights(seed));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.5f, 1.5f), v(-0.5f, 0.5f);
  for (auto& x : t) {
    const std::string& n = x.name;
    const bool bn = n.find("/gamma") != std::string::npos || n.find("/beta") != std::string::npos ||
                    n.find("/moving_") != std::string::npos || n.find("/bias") != std::string::npos;
    if (!bn) continue;
    for (float& f : x.values)
      f = (n.find("variance") != std::string::npos || n.find("gamma") != std::string::npos) ? u(rng) : v(rng);
  }
  return t;
}

inline const NamedTensor& tensor_named(const std::vector<NamedTensor>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return t;
  FAIL("no tensor " << name);
  return ts.front();
}

// A source model version on disk, as `tandem train` writes it.
inline std::string write_source(const TempDir& tmp, const Model& m, const std::vector<NamedTensor>& tensors) {
  tandem::ModelVersion v;
  nlohmann::json weights = nlohmann::json::array();
  for (const auto& p : m.params()) weights.push_back({{"name", p.name}, {"shape", p.shape.dims}});
  v.model_json = nlohmann::json{{"format", "tandem-model"},
                                {"format_version", 1},
                                {"name", m.name()},
                                {"input_shape", m.input_shape().dims},
                                {"class_names", nlohmann::json::array()},
                                {"spec", m.spec()},
                                {"weights", weights},
                                {"metadata", nlohmann::json::object()}};
  v.tensors = tensors;
  const std::string dir = tmp / "src/model/1";
  tandem::write_model_version(dir, v);
  return dir;
}

}  // namespace tandem::test

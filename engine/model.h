// A Sequential model built from a Keras-like JSON spec: shape inference, parameter layout
// (the arena), initial weights from a seed, and a Keras-style summary.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/layer.h"
#include "engine/named_tensor.h"

namespace tandem {

// One parameter tensor's place in the arena. Trainable parameters come first, so the gradient
// arena (and the optimizer) cover exactly [0, trainable_floats).
struct ParamSlot {
  std::string name;  // "<layer>/<param>", e.g. "dense_1/kernel"
  Shape shape;
  size_t offset = 0;  // in floats, 16-float aligned
  int layer = 0, index = 0;  // which layer, which of its params
  ParamSpec spec;
};

class Model {
 public:
  // Validates the spec completely. `source` names it in errors (a file name or "preset 'mlp'").
  static Model from_spec(const nlohmann::json& spec, const std::string& source);
  // "mlp", "cnn", or a path to a JSON file.
  static Model from_name_or_file(const std::string& model);
  static nlohmann::json preset(const std::string& name);  // throws InvalidArgument if unknown

  const std::string& name() const { return name_; }
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return layers_.back()->output_shape(); }
  int num_classes() const { return static_cast<int>(output_shape().numel()); }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  const std::vector<ParamSlot>& params() const { return params_; }
  size_t arena_floats() const { return arena_floats_; }
  size_t trainable_floats() const { return trainable_floats_; }
  int64_t param_count() const;
  int64_t trainable_param_count() const;
  nlohmann::json spec() const;  // normalised: every layer named, every field explicit

  // Fresh layer objects with the same configuration (one set per replica).
  std::vector<std::unique_ptr<Layer>> instantiate() const;
  // The initial arena contents (host), from the seed alone.
  std::vector<float> initial_weights(uint64_t seed) const;
  // Arena <-> named tensors (for files). from_tensors checks names and shapes.
  std::vector<NamedTensor> to_tensors(const std::vector<float>& arena) const;
  std::vector<float> from_tensors(const std::vector<NamedTensor>& tensors, const std::string& source) const;

  std::string summary() const;  // the Keras table

  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

 private:
  Model() = default;
  std::string name_;
  Shape input_shape_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<ParamSlot> params_;
  size_t arena_floats_ = 0, trainable_floats_ = 0;
};

}  // namespace tandem

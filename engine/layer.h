// Layers: each knows its shapes, its parameters and how to run forward and backward on any
// Backend. Parameters and gradients are views into the replica's arenas (docs/ARCHITECTURE.md §2).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/tensor.h"

namespace tandem {

enum class Init { GlorotUniform, HeNormal, HeUniform, Zeros, Ones };
Init parse_init(const std::string& name);  // throws InvalidArgument
const char* init_name(Init init);

struct ParamSpec {
  std::string name;  // "kernel", "bias", "gamma", ... (the layer name is prepended by Model)
  Shape shape;
  Init init = Init::Zeros;
  int64_t fan_in = 0, fan_out = 0;
  bool trainable = true;
};

enum class Activation { Linear, Relu, Softmax };
Activation parse_activation(const std::string& name);  // throws InvalidArgument
const char* activation_name(Activation a);

// What every layer call needs to know about the step it belongs to.
struct StepContext {
  Backend* backend = nullptr;
  int64_t batch = 0;      // rows in this replica's batch
  bool training = false;  // dropout active, batch statistics in BatchNormalization
  bool want_probs = false;  // apply a final softmax (prediction); training works on logits
  uint64_t seed = 0, step = 0, first_sample = 0;  // dropout keys (docs/ARCHITECTURE.md §5)
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string type() const = 0;  // Keras class name, e.g. "Dense"
  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }
  int index() const { return index_; }  // position in the model; keys dropout masks
  void set_index(int i) { index_ = i; }

  // Infers the per-sample output shape from the per-sample input shape (no batch dimension).
  // Throws InvalidArgument naming the layer when the shapes are impossible.
  virtual Shape build(const Shape& input) = 0;
  const Shape& input_shape() const { return in_; }
  const Shape& output_shape() const { return out_; }
  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  // Scratch floats this layer needs for a batch of `batch` rows (masks, argmax, statistics).
  virtual size_t scratch_floats(int64_t batch) const { return 0; }
  // True when the layer ends in softmax: training then hands it d(loss)/d(logits) directly.
  virtual bool ends_with_softmax() const { return false; }

  void bind(std::vector<float*> params, std::vector<float*> grads, float* scratch) {
    params_ = std::move(params);
    grads_ = std::move(grads);
    scratch_ = scratch;
  }

  virtual void forward(const StepContext& ctx, const float* x, float* y) = 0;
  // dy may be overwritten. dx == nullptr for the first layer (no input gradient needed).
  // Writes (not accumulates) the gradients of this layer's trainable parameters.
  virtual void backward(const StepContext& ctx, const float* x, const float* y, float* dy, float* dx) = 0;

  // The layer as it appears in a model spec (round-trips through make_layer).
  virtual nlohmann::json config() const = 0;

 protected:
  std::string name_;
  int index_ = 0;
  Shape in_, out_;
  std::vector<float*> params_, grads_;
  float* scratch_ = nullptr;
};

// Builds a layer from one entry of a model spec's "layers" array. Unknown types, unknown keys,
// wrong value types and out-of-range values throw InvalidArgument naming `where`.
std::unique_ptr<Layer> make_layer(const nlohmann::json& config, const std::string& where);

// Keras's default name stem for a layer type ("Dense" -> "dense", "MaxPool2D" -> "max_pooling2d").
std::string default_layer_stem(const std::string& type);

}  // namespace tandem

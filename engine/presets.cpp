// The built-in model presets, written as the same JSON a user would write.
#include "engine/errors.h"
#include "engine/model.h"

namespace tandem {

nlohmann::json Model::preset(const std::string& name) {
  if (name == "mlp")
    // The classic Fashion-MNIST MLP: Flatten -> Dense 300 relu -> Dense 100 relu -> Dense 10 softmax.
    return nlohmann::json::parse(R"({
      "name": "mlp",
      "input_shape": [28, 28, 1],
      "layers": [
        {"type": "Flatten"},
        {"type": "Dense", "units": 300, "activation": "relu"},
        {"type": "Dense", "units": 100, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"}
      ]})");
  if (name == "cnn")
    // create_model() of the distributed-training tutorials.
    return nlohmann::json::parse(R"({
      "name": "cnn",
      "input_shape": [28, 28, 1],
      "layers": [
        {"type": "Conv2D", "filters": 64, "kernel_size": 7, "padding": "same", "activation": "relu"},
        {"type": "MaxPool2D", "pool_size": 2},
        {"type": "Conv2D", "filters": 128, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "Conv2D", "filters": 128, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "MaxPool2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": 64, "activation": "relu"},
        {"type": "Dropout", "rate": 0.5},
        {"type": "Dense", "units": 10, "activation": "softmax"}
      ]})");
  throw_invalid("unknown model preset '" + name + "'", "use --model mlp, --model cnn or --model FILE.json");
}

}  // namespace tandem

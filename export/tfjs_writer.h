// The TensorFlow.js writer: a layers-model directory tfjs/ — model.json (Keras 2-style Sequential
// topology + weights manifest) and group1-shard{i}of{n}.bin — for tfjs-layers' loadLayersModel and
// tensorflowjs' Python loader (load_keras_model).
//
// model.json: {"format": "layers-model", "generatedBy", "convertedBy", "modelTopology":
// {"keras_version", "backend": "tensorflow", "model_config": {"class_name": "Sequential", "config":
// {"name", "layers": [InputLayer{batch_input_shape [null, H, W, C], dtype "float32"}, ...]}}},
// "weightsManifest": [{"paths": [shards], "weights": [{"name", "shape", "dtype": "float32"}]}]}.
// Each Tandem layer becomes the Keras layer of the same name and meaning (Keras matches weights by
// name "<layer>/<weight>", so the names are Tandem's own): Conv2D, MaxPooling2D, Flatten, Dense,
// Dropout and BatchNormalization (kept as layers: the topology mirrors the model), ReLU, Softmax,
// Activation. Weights keep Tandem's (= Keras's) layouts: HWIO kernels, Dense [in, out].
//
// The shards are the manifest's weights as little-endian float32, concatenated in manifest order and
// cut every `shard_bytes` (4 MiB, tensorflowjs' default): a weight may span two shards.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "storage/weights_file.h"

namespace tandem::tfjs {

constexpr const char* kDirName = "tfjs";
constexpr const char* kModelFileName = "model.json";
constexpr size_t kShardBytes = 4194304;

struct LayersModel {
  nlohmann::json model_json;
  std::vector<std::pair<std::string, std::string>> shards;  // file name, bytes
};

// Throws InvalidArgument naming a layer that cannot be exported (a type TF.js lacks) and Error(Data)
// when `tensors` are not the model's weights.
LayersModel build(const Model& model, const std::vector<NamedTensor>& tensors, size_t shard_bytes = kShardBytes);

// The files of the tfjs/ directory, paths relative to the version directory ("tfjs/model.json", ...).
std::vector<std::pair<std::string, std::string>> files(const LayersModel& m);

// Reads back what describe_export reports about a tfjs/ directory: {"dir", "format", "generated_by",
// "class_name", "layers": [{"class_name", "name"}], "weights": [{"name", "shape", "dtype", "bytes"}],
// "shards": [{"file", "bytes"}], "weight_bytes"}. The shards' sizes must add up to what the
// manifest's weights need, group by group. Throws Error(Data) naming the file for anything malformed
// (JSON, structure, a missing or oversized shard, a shard path that is not a plain file name).
nlohmann::json describe_tfjs(const std::string& dir);

}  // namespace tandem::tfjs

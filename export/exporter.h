// `tandem export`: writes a saved model version as a new version of a served model,
// BASE/NAME/<version>/, in one or more formats:
//   native      model.json + weights.tdw (byte copies of the source version)
//   savedmodel  saved_model.pb (a frozen inference graph for TensorFlow / TF Serving) + the native files
//   onnx        model.onnx (ONNX IR 8, opset 17) + the native files
//   tflite      model.tflite (TensorFlow Lite, float32 or quantized; export/tflite_writer.h,
//               export/tflite_quantize.h) + the native files
//   tfjs        tfjs/model.json + tfjs/group1-shard*.bin (a TensorFlow.js layers model;
//               export/tfjs_writer.h) + the native files
// Several formats may be combined ("savedmodel,onnx"); the native files are always there, so the same
// tree serves Tandem's own tools too.
//
// The exported graphs take the model's input as float32 NHWC pixels scaled to [0, 1] (x / 255, as
// Tandem feeds its layers), with a free batch dimension: input "input" [-1, 28, 28, 1] and output
// "probabilities" [-1, classes] for the Fashion-MNIST models.
//
// A version is written into a hidden temporary sibling (".tmp-export-<version>-<pid>-<random>",
// not numeric, so TF Serving and list_versions ignore it), fsynced and renamed into place: a reader
// never sees half a version, and on any failure nothing is left behind.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model.h"
#include "export/tflite_quantize.h"
#include "storage/weights_file.h"

namespace tandem {

constexpr const char* kSavedModelFileName = "saved_model.pb";
constexpr const char* kOnnxFileName = "model.onnx";
constexpr const char* kTfliteFileName = "model.tflite";

// Parses --format: "native", "savedmodel", "onnx", "tflite", "tfjs", a comma-separated list of them,
// or "all". Returns the distinct formats in canonical order (native, savedmodel, onnx, tflite, tfjs).
// Throws InvalidArgument with a hint.
std::vector<std::string> parse_export_formats(const std::string& format);

// Exports `src_version_dir` (a model version directory, e.g. out/model/1) to
// `dest_model_dir`/<version>/ and returns that directory. `version` 0 means the next free version.
// Throws InvalidArgument for an unknown format, a negative version, an existing destination version
// without `overwrite`; the read_model_version errors for a bad source; Io errors for the file system.
// `tflite` quantizes model.tflite (export/tflite_quantize.h); a mode other than none without the
// tflite format is an InvalidArgument, as are the quantizer's own errors (nothing is written then).
std::string export_model(const std::string& src_version_dir, const std::string& dest_model_dir, int64_t version,
                         const std::string& format, bool overwrite, const tfl::QuantizeOptions& tflite = {});

// Describes the exported formats present in a version directory:
//   {"version_dir": DIR, "formats": ["native", "savedmodel", "onnx"] (those present, maybe none),
//    "native": {"files": [...], "name", "input_shape", "class_names"},
//    "savedmodel": {"file", "bytes", "schema_version", "meta_graphs", "tags", "producer", "nodes",
//                   "ops": {op: count}, "variables": whether a variables/ directory exists,
//                   "signatures": {"serving_default": {"method_name",
//                       "inputs": {"input": {"name": "input:0", "dtype": "DT_FLOAT", "shape": [-1, 28, 28, 1]}},
//                       "outputs": {"probabilities": {...}}}}},
//    "onnx": {"file", "bytes", "ir_version", "opset", "producer_name", "producer_version", "nodes",
//             "initializers", "ops": {op: count},
//             "inputs": [{"name": "input", "dtype": "FLOAT", "shape": [-1, 28, 28, 1],
//                         "dim_params": ["batch", "", "", ""]}],
//             "outputs": [...]},
//    "tflite": tfl::describe_tflite's object (ops with counts, tensors, buffers and their bytes,
//              inputs/outputs with shapes, signatures),
//    "tfjs": tfjs::describe_tfjs's object (topology layers, manifest weights, shard files and sizes)}
// A symbolic dimension (TF's -1, ONNX's dim_param, TFLite's shape_signature -1) is -1 in "shape".
// The files are parsed, not trusted: a malformed saved_model.pb, model.onnx, model.tflite or tfjs/
// file throws Error(Data) naming the file.
// Throws Error(Io) if `version_dir` is not a readable directory.
nlohmann::json describe_export(const std::string& version_dir);

// ---- pieces shared by the format writers -------------------------------------------------------

// BatchNormalization for inference as y = x * scale + shift, computed exactly as Tandem's backends
// do (float32: scale = gamma / sqrt(moving_variance + epsilon), shift = beta - moving_mean * scale).
// Whether a Dense or Conv2D layer has a bias, as its config says ("use_bias", true when absent).
bool layer_uses_bias(const Layer& layer);

struct FoldedBatchNorm {
  std::vector<float> scale, shift;
};
FoldedBatchNorm fold_batch_norm(const std::vector<float>& gamma, const std::vector<float>& beta,
                                const std::vector<float>& moving_mean, const std::vector<float>& moving_variance,
                                float epsilon);

// The weights of a model by name, checked against it first (every parameter present with its shape,
// none extra: Error(Data) otherwise). What the format writers read their constants from.
class ModelWeights {
 public:
  ModelWeights(const Model& model, const std::vector<NamedTensor>& tensors);
  const NamedTensor& operator[](const std::string& name) const;  // a parameter of the model

 private:
  std::map<std::string, const NamedTensor*> by_name_;
};

// `values` of a row-major tensor of shape `dims`, with its axes permuted: output axis k is input axis
// perm[k] (numpy's transpose). The writers' layouts: HWIO -> OIHW (ONNX) is {3, 2, 0, 1}, HWIO -> OHWI
// (TFLite) {3, 0, 1, 2}, a Dense kernel [in, out] -> [out, in] {1, 0}.
std::vector<float> transpose(const std::vector<float>& values, const std::vector<int64_t>& dims,
                             const std::vector<int>& perm);

// For tests: called with a stage name ("files-written", "before-commit") while an export writes
// its temporary directory; a hook that throws simulates a failure there. Pass {} to clear.
void set_export_fault_hook_for_testing(std::function<void(const std::string& stage)> hook);

}  // namespace tandem

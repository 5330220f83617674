// The TensorFlow Lite writer: model.tflite (schema version 3, float32), for LiteRT / tf.lite, and
// anything else that reads .tflite (OpenVINO).
//
// One subgraph "main": input "input" float32 [1, H, W, C] with shape_signature [-1, H, W, C] (a free
// batch dimension, as the TF converter writes it; every activation carries it too), output
// "probabilities" [1, classes] / [-1, classes]; one SignatureDef "serving_default" (input "input",
// output "probabilities", subgraph 0). NHWC activations, as in Tandem. Per layer:
//   Conv2D             CONV_2D [x, filter OHWI (the HWIO kernel transposed 3,0,1,2), bias [O]
//                      (zeros when the layer has none: the kernel requires one)]{padding, strides}
//   Dense              FULLY_CONNECTED [x, weights [out, in] (the kernel transposed), bias [out]]
//   MaxPool2D          MAX_POOL_2D{padding, strides, filter}
//   Flatten            RESHAPE [x, int32 [-1, H*W*C]]{new_shape [-1, H*W*C]}   (nothing when flat)
//   BatchNormalization folded into the CONV_2D / FULLY_CONNECTED just before it when that one has no
//                      activation yet (W' = W * scale per output channel, b' = b * scale + shift, with
//                      scale and shift as Tandem computes them); otherwise MUL [C] + ADD [C]
//   ReLU, activation relu   fused into the op before (fused_activation_function RELU) when that is
//                      a CONV_2D, FULLY_CONNECTED, ADD or MAX_POOL_2D without one; otherwise RELU
//   Softmax, activation softmax   SOFTMAX{beta 1.0} (the schema default 0.0 gives uniform outputs)
//   Dropout, linear Activation    nothing (inference)
// The last tensor is reshaped to [-1, classes] if it is not already that.
//
// Buffers: buffers[0] is empty (the tensors without data point at it); each constant has its own,
// 16-byte aligned. Every operator of this float graph has version 1 (what the TF 2.21 converter writes
// for these float ops); export/tflite_quantize.h rewrites the graph for the quantized modes, with the
// op versions their kernels need. An operator code's version is the highest of its operators'. The
// bytes depend on the model and weights only: the same input exports to the same file.
//
// Encoding and reading need flatbuffers at build time (TANDEM_HAVE_TFLITE); without it they throw
// InvalidArgument with a hint, and build_graph still works.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model.h"
#include "storage/weights_file.h"

namespace tandem::tfl {

constexpr uint32_t kSchemaVersion = 3;

// The public schema numbers (export/tflite_schema.fbs) of what the builder emits.
enum OpCode : int32_t {
  ADD = 0,
  CONV_2D = 3,
  DEQUANTIZE = 6,
  FULLY_CONNECTED = 9,
  MAX_POOL_2D = 17,
  MUL = 18,
  RELU = 19,
  RESHAPE = 22,
  SOFTMAX = 25,
  QUANTIZE = 114
};
const char* op_name(int32_t code);  // "CONV_2D"; "BUILTIN_<n>" for codes not in the subset
enum ElemType : int8_t { FLOAT32 = 0, FLOAT16 = 1, INT32 = 2, INT8 = 9 };
enum Padding : int8_t { SAME = 0, VALID = 1 };
enum FusedActivation : int8_t { NONE = 0, FUSED_RELU = 1 };

// Affine quantization, real = scale * (q - zero_point): one scale and zero point for the whole tensor,
// or one per index of `dimension` (per channel). Empty: not quantized.
struct Quantization {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  int32_t dimension = 0;
  bool empty() const { return scale.empty(); }
};

struct Tensor {
  std::string name;
  std::vector<int32_t> shape;  // a free batch dimension is 1 here
  bool free_batch = false;     // shape_signature = shape with -1 in front
  int8_t type = FLOAT32;
  uint32_t buffer = 0;  // 0: no data
  Quantization quantization;
};

struct Operator {
  int32_t op = ADD;
  std::vector<int32_t> inputs, outputs;
  // Options; which ones are written depends on `op`.
  int8_t padding = VALID;
  int32_t stride_h = 1, stride_w = 1, filter_h = 1, filter_w = 1;  // conv / pool
  int8_t activation = NONE;                                        // conv, fully connected, add, mul
  std::vector<int32_t> new_shape;                                  // reshape
  bool asymmetric_quantize_inputs = false;                         // hybrid fully connected
  int32_t version = 1;                                             // the kernel version it needs
};

struct Graph {
  std::string name;
  std::vector<Tensor> tensors;
  std::vector<std::string> buffers{std::string()};    // raw little-endian bytes; [0] empty
  std::vector<Operator> operators;                    // in execution order
  int32_t input = 0, output = 0;                      // tensor indices
  std::vector<float> constant(int32_t tensor) const;  // a float tensor's buffer as floats
};

// Builds the inference graph. `tensors` must be the model's weights (names and shapes are checked).
// Throws InvalidArgument naming a layer that cannot be exported.
Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors);

// Whether this build can encode and read .tflite files (flatbuffers was found at configure time).
bool available();
// The bytes of model.tflite. Throws InvalidArgument with a hint when !available().
std::string encode_model(const Graph& graph);
// Reads back what describe_export reports about a model.tflite, after the flatbuffers verifier
// passed it: {"file", "bytes", "version", "description", "subgraphs", "operators", "ops": {name:
// count}, "op_versions": {name: version}, "tensors", "tensor_types": {dtype: count}, "buffers",
// "buffer_bytes", "inputs"/"outputs": [{"name", "dtype", "shape"}] (-1 for a free dimension),
// "signatures": {key: {"subgraph", "inputs": {name: tensor name}, "outputs": {...}}},
// "quantized_tensors": [{"name", "dtype", "scale": [...], "zero_point": [...], "quantized_dimension"}]
// (the tensors with quantization parameters, in tensor order)}. Throws Error(Data) naming `where` for
// anything malformed, including quantization parameters that do not fit their tensor (lengths that
// differ or match neither 1 nor the quantized dimension, a dimension outside the shape, a scale that
// is not finite and positive).
nlohmann::json describe_tflite(const std::string& bytes, const std::string& where);

}  // namespace tandem::tfl

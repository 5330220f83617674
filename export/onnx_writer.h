// The ONNX writer: model.onnx (IR version 8, default-domain opset 17), for onnxruntime and
// anything else that reads ONNX.
//
// The graph keeps Tandem's interface: input "input" float [batch, H, W, C] (NHWC, "batch" a
// dim_param), output "probabilities" float [batch, classes]. Inside, ONNX's image ops work on NCHW:
//   entering an image op (Conv, MaxPool) from NHWC   Transpose perm [0, 3, 1, 2]
//   Conv2D             Conv{kernel_shape, strides, pads} with the kernel transposed HWIO -> OIHW and
//                      the bias as its third input; TF "same" padding as explicit pads
//                      [top, left, bottom, right], top = total / 2 (TensorFlow's choice), [Relu]
//   MaxPool2D          MaxPool{kernel_shape, strides, pads} (padded cells never win, as in TF)
//   Flatten            Transpose perm [0, 2, 3, 1] back to NHWC first, so the Dense kernel keeps
//                      its (H, W, C) row order; then Flatten{axis 1}
//   Dense              Gemm(A, kernel [in, out], bias) or MatMul without a bias, [Relu | Softmax]
//   BatchNormalization Mul(scale) + Add(shift) (folded as Tandem computes it), the constants shaped
//                      [C, 1, 1] in NCHW and [C] otherwise
//   ReLU / Softmax     Relu / Softmax{axis -1};  Dropout, linear Activation: nothing
// Initializers carry raw_data (little-endian) and are not listed as graph inputs (IR >= 4).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model.h"
#include "storage/weights_file.h"

namespace tandem::onnx {

constexpr int64_t kIrVersion = 8;
constexpr int64_t kOpsetVersion = 17;

// onnx.proto TensorProto.DataType
enum ElemType : int { FLOAT = 1, INT64 = 7 };
const char* elem_type_name(int elem_type);  // "FLOAT"

struct Attribute {
  enum class Kind { Int, Ints, Float, String };
  std::string name;
  Kind kind = Kind::Int;
  int64_t i = 0;
  std::vector<int64_t> ints;
  float f = 0;
  std::string s;
  static Attribute integer(std::string name, int64_t v);
  static Attribute integers(std::string name, std::vector<int64_t> v);
};

struct Node {
  std::string name, op_type;
  std::vector<std::string> inputs, outputs;
  std::vector<Attribute> attributes;
  const Attribute* attribute(const std::string& attr_name) const;
};

struct Initializer {
  std::string name;
  int elem_type = FLOAT;
  std::vector<int64_t> dims;
  std::string raw_data;
};

struct ValueInfo {
  std::string name;
  int elem_type = FLOAT;
  std::vector<int64_t> dims;  // -1: symbolic, named by dim_param
  std::string dim_param = "batch";
};

struct Graph {
  std::string name;
  std::vector<Node> nodes;
  std::vector<Initializer> initializers;
  ValueInfo input, output;
  const Initializer* initializer(const std::string& init_name) const;
};

// Builds the inference graph. `tensors` must be the model's weights (names and shapes are checked).
Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors);
// The serialized ModelProto (the bytes of model.onnx).
std::string encode_model(const Graph& graph);
// Reads back what describe_export reports about a model.onnx. Throws Error(Data) naming `where`.
nlohmann::json describe_onnx(const std::string& bytes, const std::string& where);

}  // namespace tandem::onnx

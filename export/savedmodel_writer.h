// The SavedModel writer: a frozen TensorFlow inference graph in saved_model.pb, loadable by
// tf.saved_model.load, saved_model_cli and TensorFlow Serving.
//
// SavedModel{schema_version 1, one MetaGraphDef{tags ["serve"], GraphDef, signature "serving_default"}}.
// Weights are Const nodes (full shape, little-endian tensor_content): there is no variables/
// directory and no saver, which TensorFlow accepts ("The specified SavedModel has no variables; no
// checkpoints were restored."). No object_graph_def: loaders take the TF1 (MetaGraph) path.
//
// Per layer (NHWC activations, HWIO filters, Dense kernel [in, out] — TensorFlow's own layouts, so
// the weights are byte copies):
//   Conv2D             Const kernel, Conv2D{T, strides [1,sh,sw,1], padding}, [Const bias, BiasAdd], [Relu]
//   Dense              Const kernel, MatMul{T}, [Const bias, BiasAdd], [Relu | Softmax]
//   MaxPool2D          MaxPool{ksize [1,ph,pw,1], strides [1,sh,sw,1], padding}
//   Flatten            Const int32 [-1, H*W*C], Reshape{T}           (nothing when already flat)
//   BatchNormalization Const scale, Mul{T}, Const shift, AddV2{T}   (folded, as Tandem computes it)
//   ReLU / Softmax / Activation   Relu / Softmax / nothing for linear
//   Dropout            nothing (inference)
// Attributes: the required ones and those differing from the op's default only (an attribute a
// newer TensorFlow added with a default would break older runtimes), and the MetaInfoDef says so
// (stripped_default_attrs).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model.h"
#include "storage/weights_file.h"

namespace tandem::savedmodel {

// tensorflow/core/framework/types.proto
enum DataType : int { DT_FLOAT = 1, DT_INT32 = 3 };
const char* data_type_name(int dtype);  // "DT_FLOAT"

// GraphDef versions{producer}: the GraphDef version this graph was written against. TensorFlow
// rejects a graph only when producer < its min_producer (0) or min_consumer > its own version, so
// any value loads; a fixed one keeps the export deterministic. Every op used here has kept its
// form since long before this version (TensorFlow 2.21's own GRAPH_DEF_VERSION is 2474).
constexpr int64_t kGraphProducer = 1994;

struct TensorValue {
  int dtype = DT_FLOAT;
  std::vector<int64_t> shape;
  std::string content;  // little-endian raw bytes, product(shape) elements
};

struct AttrValue {
  enum class Kind { Type, Int, String, Shape, IntList, Tensor };
  Kind kind = Kind::Int;
  int64_t i = 0;              // Type (a DataType) or Int
  std::string s;              // String
  std::vector<int64_t> list;  // Shape dims (-1 unknown) or IntList
  TensorValue tensor;         // Tensor

  static AttrValue type(int dtype);
  static AttrValue integer(int64_t v);
  static AttrValue string(std::string v);
  static AttrValue shape(std::vector<int64_t> dims);
  static AttrValue ints(std::vector<int64_t> values);
  static AttrValue tensor_value(TensorValue t);
};

struct NodeDef {
  std::string name, op;
  std::vector<std::string> inputs;
  std::map<std::string, AttrValue> attrs;  // sorted: deterministic output
};

struct TensorInfo {
  std::string key;   // the signature's name for it: "input", "probabilities"
  std::string name;  // "<node>:0"
  int dtype = DT_FLOAT;
  std::vector<int64_t> shape;  // -1 for the batch dimension
};

struct Graph {
  std::vector<NodeDef> nodes;
  TensorInfo input, output;
  int64_t producer = kGraphProducer;
  const NodeDef* find(const std::string& name) const;
};

constexpr const char* kServeTag = "serve";
constexpr const char* kSignatureKey = "serving_default";
constexpr const char* kPredictMethod = "tensorflow/serving/predict";

// Builds the inference graph. `tensors` must be the model's weights (names and shapes are checked).
Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors);
// The serialized SavedModel (the bytes of saved_model.pb).
std::string encode_saved_model(const Graph& graph);
// Reads back what describe_export reports about a saved_model.pb. Throws Error(Data) naming `where`.
nlohmann::json describe_saved_model(const std::string& bytes, const std::string& where);

}  // namespace tandem::savedmodel

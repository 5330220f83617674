#include "export/onnx_writer.h"

#include <algorithm>
#include <map>
#include <set>

#include "engine/errors.h"
#include "export/exporter.h"
#include "export/protobuf_io.h"
#include "storage/raw_bytes.h"
#include "onnx/onnx.pb.h"

namespace tandem::onnx {

using nlohmann::json;

const char* elem_type_name(int elem_type) {
  switch (elem_type) {
    case 1: return "FLOAT";
    case 2: return "UINT8";
    case 3: return "INT8";
    case 6: return "INT32";
    case 7: return "INT64";
    case 9: return "BOOL";
    case 10: return "FLOAT16";
    case 11: return "DOUBLE";
    case 16: return "BFLOAT16";
    default: return "UNDEFINED";
  }
}

Attribute Attribute::integer(std::string name, int64_t v) {
  Attribute a;
  a.name = std::move(name);
  a.kind = Kind::Int;
  a.i = v;
  return a;
}

Attribute Attribute::integers(std::string name, std::vector<int64_t> v) {
  Attribute a;
  a.name = std::move(name);
  a.kind = Kind::Ints;
  a.ints = std::move(v);
  return a;
}

const Attribute* Node::attribute(const std::string& attr_name) const {
  for (const Attribute& a : attributes)
    if (a.name == attr_name) return &a;
  return nullptr;
}

const Initializer* Graph::initializer(const std::string& init_name) const {
  for (const Initializer& i : initializers)
    if (i.name == init_name) return &i;
  return nullptr;
}

namespace {

constexpr const char* kInputName = "input";
constexpr const char* kOutputName = "probabilities";

// TensorFlow's "same" padding along one axis: {before, after}.
std::pair<int64_t, int64_t> same_pads(int64_t in, int64_t k, int64_t stride) {
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + k - in, 0);
  return {total / 2, total - total / 2};
}

class GraphBuilder {
 public:
  GraphBuilder(const Model& model, const std::vector<NamedTensor>& tensors) : model_(model), weights_(model, tensors) {}

  Graph build() {
    graph_.name = model_.name();
    std::vector<int64_t> in_dims{-1};
    for (int64_t d : model_.input_shape().dims) in_dims.push_back(d);
    graph_.input = ValueInfo{kInputName, FLOAT, in_dims, "batch"};
    std::string x = kInputName;
    for (const auto& layer : model_.layers()) x = add_layer(*layer, x);
    TANDEM_ASSERT(!nchw_);  // the output is flat
    if (graph_.nodes.empty() || graph_.nodes.back().outputs[0] != x) x = node("Identity", "output/Identity", {x});
    graph_.nodes.back().outputs[0] = kOutputName;  // x is produced by the last node
    graph_.output = ValueInfo{kOutputName, FLOAT, {-1, model_.output_shape().numel()}, "batch"};
    return std::move(graph_);
  }

 private:
  std::string node(const std::string& op_type, const std::string& name, std::vector<std::string> inputs,
                   std::vector<Attribute> attrs = {}) {
    TANDEM_ASSERT(names_.insert(name).second);
    graph_.nodes.push_back(Node{name, op_type, std::move(inputs), {name}, std::move(attrs)});
    return name;
  }
  std::string initializer(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& values) {
    TANDEM_ASSERT(names_.insert(name).second);
    graph_.initializers.push_back(Initializer{name, FLOAT, std::move(dims), float_bytes(values)});
    return name;
  }
  const NamedTensor& tensor(const std::string& name) const { return weights_[name]; }
  std::string to_nchw(const std::string& p, const std::string& x) {
    if (nchw_) return x;
    nchw_ = true;
    return node("Transpose", p + "/to_nchw", {x}, {Attribute::integers("perm", {0, 3, 1, 2})});
  }
  std::string to_nhwc(const std::string& p, const std::string& x) {
    if (!nchw_) return x;
    nchw_ = false;
    return node("Transpose", p + "/to_nhwc", {x}, {Attribute::integers("perm", {0, 2, 3, 1})});
  }
  std::string activation(const std::string& p, const std::string& act, const std::string& x) {
    if (act == "relu") return node("Relu", p + "/Relu", {x});
    if (act == "softmax") return node("Softmax", p + "/Softmax", {x}, {Attribute::integer("axis", -1)});
    if (act == "linear") return x;
    throw_invalid("activation '" + act + "' cannot be exported to ONNX");
  }
  // kernel_shape, strides and (for "same", when not all zero) pads of a 2-D window over `in` (H, W, C).
  static std::vector<Attribute> window(const json& c, const char* size_key, const Shape& in) {
    const int64_t kh = c.at(size_key).at(0).get<int64_t>(), kw = c.at(size_key).at(1).get<int64_t>();
    const int64_t sh = c.at("strides").at(0).get<int64_t>(), sw = c.at("strides").at(1).get<int64_t>();
    std::vector<Attribute> attrs{Attribute::integers("kernel_shape", {kh, kw}),
                                 Attribute::integers("strides", {sh, sw})};
    if (c.at("padding").get<std::string>() == "same") {
      const auto [top, bottom] = same_pads(in[0], kh, sh);
      const auto [left, right] = same_pads(in[1], kw, sw);
      if (top || bottom || left || right) attrs.push_back(Attribute::integers("pads", {top, left, bottom, right}));
    }
    return attrs;
  }

  std::string add_layer(const Layer& layer, std::string x) {
    const json c = layer.config();
    const std::string type = layer.type();
    const std::string& p = layer.name();
    const bool use_bias = layer_uses_bias(layer);
    if (type == "Conv2D") {
      const NamedTensor& k = tensor(p + "/kernel");  // HWIO
      const int64_t H = k.shape[0], W = k.shape[1], I = k.shape[2], O = k.shape[3];
      const std::vector<float> oihw = transpose(k.values, k.shape.dims, {3, 2, 0, 1});
      x = to_nchw(p, x);
      std::vector<std::string> inputs{x, initializer(p + "/kernel", {O, I, H, W}, oihw)};
      if (use_bias) inputs.push_back(initializer(p + "/bias", {O}, tensor(p + "/bias").values));
      x = node("Conv", p + "/Conv", inputs, window(c, "kernel_size", layer.input_shape()));
      return activation(p, c.at("activation").get<std::string>(), x);
    }
    if (type == "Dense") {
      const NamedTensor& k = tensor(p + "/kernel");
      const std::string kernel = initializer(p + "/kernel", k.shape.dims, k.values);
      if (use_bias)
        x = node("Gemm", p + "/Gemm", {x, kernel, initializer(p + "/bias", {k.shape[1]}, tensor(p + "/bias").values)});
      else
        x = node("MatMul", p + "/MatMul", {x, kernel});
      return activation(p, c.at("activation").get<std::string>(), x);
    }
    if (type == "MaxPool2D") {
      x = to_nchw(p, x);
      return node("MaxPool", p + "/MaxPool", {x}, window(c, "pool_size", layer.input_shape()));
    }
    if (type == "Flatten") {
      if (layer.input_shape().rank() == 1) return x;
      x = to_nhwc(p, x);                            // (H, W, C) order, as the Dense kernel's rows expect
      return node("Flatten", p + "/Flatten", {x});  // axis defaults to 1
    }
    if (type == "BatchNormalization") {
      const FoldedBatchNorm bn =
          fold_batch_norm(tensor(p + "/gamma").values, tensor(p + "/beta").values, tensor(p + "/moving_mean").values,
                          tensor(p + "/moving_variance").values, static_cast<float>(c.at("epsilon").get<double>()));
      const int64_t C = static_cast<int64_t>(bn.scale.size());
      const std::vector<int64_t> dims = nchw_ ? std::vector<int64_t>{C, 1, 1} : std::vector<int64_t>{C};
      x = node("Mul", p + "/Mul", {x, initializer(p + "/scale", dims, bn.scale)});
      return node("Add", p + "/Add", {x, initializer(p + "/shift", dims, bn.shift)});
    }
    if (type == "Dropout") return x;  // identity at inference
    if (type == "ReLU") return activation(p, "relu", x);
    if (type == "Softmax") return activation(p, "softmax", x);
    if (type == "Activation") return activation(p, c.at("activation").get<std::string>(), x);
    throw_invalid("layer '" + p + "' of type " + type + " cannot be exported to ONNX",
                  "supported: Dense, Conv2D, MaxPool2D, Flatten, Dropout, BatchNormalization, ReLU, Softmax, "
                  "Activation");
  }

  const Model& model_;
  ModelWeights weights_;
  std::set<std::string> names_{kInputName, kOutputName};
  bool nchw_ = false;
  Graph graph_;
};

// ---- encoding ----------------------------------------------------------------------------------

namespace pb = ::onnx;  // the generated messages (proto/onnx/onnx.proto)

void fill_attribute(const Attribute& a, pb::AttributeProto* attr) {
  attr->set_name(a.name);
  switch (a.kind) {
    case Attribute::Kind::Float:
      attr->set_f(a.f);
      attr->set_type(pb::AttributeProto::FLOAT);
      break;
    case Attribute::Kind::Int:
      attr->set_i(a.i);
      attr->set_type(pb::AttributeProto::INT);
      break;
    case Attribute::Kind::String:
      attr->set_s(a.s);
      attr->set_type(pb::AttributeProto::STRING);
      break;
    case Attribute::Kind::Ints:
      for (int64_t v : a.ints) attr->add_ints(v);
      attr->set_type(pb::AttributeProto::INTS);
      break;
  }
}

void fill_node(const Node& n, pb::NodeProto* node) {
  for (const std::string& in : n.inputs) node->add_input(in);
  for (const std::string& out : n.outputs) node->add_output(out);
  node->set_name(n.name);
  node->set_op_type(n.op_type);
  for (const Attribute& a : n.attributes) fill_attribute(a, node->add_attribute());
}

void fill_initializer(const Initializer& t, pb::TensorProto* tensor) {
  for (int64_t d : t.dims) tensor->add_dims(d);
  tensor->set_data_type(t.elem_type);
  tensor->set_name(t.name);
  tensor->set_raw_data(t.raw_data);
}

void fill_value_info(const ValueInfo& v, pb::ValueInfoProto* info) {
  info->set_name(v.name);
  pb::TypeProto::Tensor* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(v.elem_type);
  pb::TensorShapeProto* shape = tensor_type->mutable_shape();
  for (int64_t d : v.dims) {
    pb::TensorShapeProto::Dimension* dim = shape->add_dim();
    if (d < 0)
      dim->set_dim_param(v.dim_param);
    else
      dim->set_dim_value(d);
  }
}

}  // namespace

Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors) {
  return GraphBuilder(model, tensors).build();
}

std::string encode_model(const Graph& graph) {
  pb::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("tandem");
  model.set_producer_version(TANDEM_VERSION);
  pb::GraphProto* g = model.mutable_graph();
  for (const Node& n : graph.nodes) fill_node(n, g->add_node());
  g->set_name(graph.name);
  for (const Initializer& i : graph.initializers) fill_initializer(i, g->add_initializer());
  fill_value_info(graph.input, g->add_input());
  fill_value_info(graph.output, g->add_output());
  pb::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");  // the default domain, written out
  opset->set_version(kOpsetVersion);
  return deterministic_bytes(model);
}

// ---- reading back ------------------------------------------------------------------------------

namespace {

constexpr const char* kNotOnnx = "the file is not an ONNX model; re-export the model with --format onnx";

json value_info_json(const pb::ValueInfoProto& info, const std::string& where) {
  const pb::TypeProto::Tensor& tensor_type = info.type().tensor_type();
  json j{{"name", printable(info.name())},
         {"dtype", elem_type_name(tensor_type.elem_type())},
         {"shape", json::array()},
         {"dim_params", json::array()}};
  for (const pb::TensorShapeProto::Dimension& dim : tensor_type.shape().dim()) {
    const int64_t size = dim.has_dim_value() ? dim.dim_value() : -1;
    if (size < -1)
      throw_data(where + ": input or output '" + printable(info.name()) + "' has the dimension " +
                     std::to_string(size) + " (below -1: not a size)",
                 kNotOnnx);
    j["shape"].push_back(size);
    j["dim_params"].push_back(printable(dim.dim_param()));
  }
  return j;
}

}  // namespace

json describe_onnx(const std::string& data, const std::string& where) {
  pb::ModelProto model;
  parse_message(model, data, where, kNotOnnx);
  json out{{"file", kOnnxFileName},
           {"bytes", data.size()},
           {"producer_name", printable(model.producer_name())},
           {"producer_version", printable(model.producer_version())},
           {"nodes", 0},
           {"initializers", 0},
           {"ops", json::object()},
           {"inputs", json::array()},
           {"outputs", json::array()}};
  if (model.has_ir_version()) out["ir_version"] = model.ir_version();
  for (const pb::OperatorSetIdProto& opset : model.opset_import())
    if (opset.domain().empty() || opset.domain() == "ai.onnx") out["opset"] = opset.version();
  if (!model.has_graph()) throw_data(where + ": the ONNX model has no graph", "re-export the model with --format onnx");

  const pb::GraphProto& graph = model.graph();
  out["nodes"] = graph.node_size();
  out["initializers"] = graph.initializer_size();
  for (const pb::NodeProto& node : graph.node()) {
    const std::string op = printable(node.op_type());
    out["ops"][op] = out["ops"].value(op, 0) + 1;
  }
  std::set<std::string> initializer_names;
  for (const pb::TensorProto& t : graph.initializer()) initializer_names.insert(t.name());
  for (const pb::ValueInfoProto& in : graph.input())  // before IR 4 initializers were listed as inputs too
    if (!initializer_names.count(in.name())) out["inputs"].push_back(value_info_json(in, where));
  for (const pb::ValueInfoProto& o : graph.output()) out["outputs"].push_back(value_info_json(o, where));
  return out;
}

}  // namespace tandem::onnx

#include "export/savedmodel_writer.h"

#include <cctype>
#include <set>

#include "engine/errors.h"
#include "export/exporter.h"
#include "export/protobuf_io.h"
#include "storage/raw_bytes.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"

namespace tandem::savedmodel {

using nlohmann::json;

const char* data_type_name(int dtype) {
  switch (dtype) {
    case 1: return "DT_FLOAT";
    case 2: return "DT_DOUBLE";
    case 3: return "DT_INT32";
    case 4: return "DT_UINT8";
    case 7: return "DT_STRING";
    case 9: return "DT_INT64";
    case 10: return "DT_BOOL";
    case 19: return "DT_HALF";
    case 14: return "DT_BFLOAT16";
    default: return "DT_UNKNOWN";
  }
}

AttrValue AttrValue::type(int dtype) {
  AttrValue a;
  a.kind = Kind::Type;
  a.i = dtype;
  return a;
}
AttrValue AttrValue::integer(int64_t v) {
  AttrValue a;
  a.kind = Kind::Int;
  a.i = v;
  return a;
}
AttrValue AttrValue::string(std::string v) {
  AttrValue a;
  a.kind = Kind::String;
  a.s = std::move(v);
  return a;
}
AttrValue AttrValue::shape(std::vector<int64_t> dims) {
  AttrValue a;
  a.kind = Kind::Shape;
  a.list = std::move(dims);
  return a;
}
AttrValue AttrValue::ints(std::vector<int64_t> values) {
  AttrValue a;
  a.kind = Kind::IntList;
  a.list = std::move(values);
  return a;
}
AttrValue AttrValue::tensor_value(TensorValue t) {
  AttrValue a;
  a.kind = Kind::Tensor;
  a.tensor = std::move(t);
  return a;
}

const NodeDef* Graph::find(const std::string& name) const {
  for (const NodeDef& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

namespace {

// ---- building ----------------------------------------------------------------------------------

// TensorFlow node names match [A-Za-z0-9.][A-Za-z0-9_./>-]*; Tandem layer names may start with '_'
// or '-'. Each layer gets a distinct valid prefix; its nodes are "<prefix>/<Op>".
class GraphBuilder {
 public:
  GraphBuilder(const Model& model, const std::vector<NamedTensor>& tensors) : model_(model) {
    model.from_tensors(tensors, "the weights of model '" + model.name() + "'");  // names and shapes
    for (const NamedTensor& t : tensors) tensors_[t.name] = &t;
    used_.insert("input");
  }

  Graph build() {
    std::vector<int64_t> in_shape{-1};
    for (int64_t d : model_.input_shape().dims) in_shape.push_back(d);
    NodeDef ph{
        "input", "Placeholder", {}, {{"dtype", AttrValue::type(DT_FLOAT)}, {"shape", AttrValue::shape(in_shape)}}};
    std::string cur = add(std::move(ph));
    graph_.input = TensorInfo{"input", cur + ":0", DT_FLOAT, in_shape};
    for (const auto& layer : model_.layers()) cur = add_layer(*layer, cur);
    graph_.output = TensorInfo{"probabilities", cur + ":0", DT_FLOAT, {-1, model_.output_shape().numel()}};
    return std::move(graph_);
  }

 private:
  std::string add(NodeDef n) {
    TANDEM_ASSERT(!graph_.find(n.name));
    graph_.nodes.push_back(std::move(n));
    return graph_.nodes.back().name;
  }
  std::string op(const std::string& name, const std::string& op_name, std::vector<std::string> inputs,
                 std::map<std::string, AttrValue> attrs = {}) {
    return add(NodeDef{name, op_name, std::move(inputs), std::move(attrs)});
  }
  std::string constant(const std::string& name, TensorValue value) {
    const int dtype = value.dtype;
    return op(name, "Const", {},
              {{"dtype", AttrValue::type(dtype)}, {"value", AttrValue::tensor_value(std::move(value))}});
  }
  std::string float_constant(const std::string& name, const std::vector<int64_t>& shape,
                             const std::vector<float>& values) {
    return constant(name, TensorValue{DT_FLOAT, shape, float_bytes(values)});
  }
  std::string weight(const std::string& node, const std::string& tensor_name) {
    const NamedTensor& t = tensor(tensor_name);
    return float_constant(node, t.shape.dims, t.values);
  }
  const NamedTensor& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    TANDEM_ASSERT(it != tensors_.end());  // from_tensors checked every parameter
    return *it->second;
  }

  std::string prefix_for(const std::string& layer_name) {
    std::string p = layer_name;
    if (p.empty() || !(std::isalnum(static_cast<unsigned char>(p[0])) || p[0] == '.')) p = "layer" + p;
    std::string candidate = p;
    for (int i = 1; !used_.insert(candidate).second; ++i) candidate = p + "_" + std::to_string(i);
    return candidate;
  }

  static AttrValue float_type() { return AttrValue::type(DT_FLOAT); }
  static AttrValue padding(const json& c) {
    return AttrValue::string(c.at("padding").get<std::string>() == "same" ? "SAME" : "VALID");
  }
  static std::vector<int64_t> spatial(const json& pair) {
    return {1, pair.at(0).get<int64_t>(), pair.at(1).get<int64_t>(), 1};
  }

  std::string activation(const std::string& p, const std::string& act, const std::string& x) {
    if (act == "relu") return op(p + "/Relu", "Relu", {x}, {{"T", float_type()}});
    if (act == "softmax") return op(p + "/Softmax", "Softmax", {x}, {{"T", float_type()}});
    if (act == "linear") return x;
    throw_invalid("activation '" + act + "' cannot be exported to a SavedModel");
  }

  std::string add_layer(const Layer& layer, std::string x) {
    const json c = layer.config();
    const std::string type = layer.type();
    const std::string& name = layer.name();
    const bool use_bias = layer_uses_bias(layer);
    if (type == "Conv2D") {
      const std::string p = prefix_for(name);
      const std::string k = weight(p + "/kernel", name + "/kernel");
      x = op(p + "/Conv2D", "Conv2D", {x, k},
             {{"T", float_type()}, {"strides", AttrValue::ints(spatial(c.at("strides")))}, {"padding", padding(c)}});
      if (use_bias) x = op(p + "/BiasAdd", "BiasAdd", {x, weight(p + "/bias", name + "/bias")}, {{"T", float_type()}});
      return activation(p, c.at("activation").get<std::string>(), x);
    }
    if (type == "Dense") {
      const std::string p = prefix_for(name);
      const std::string k = weight(p + "/kernel", name + "/kernel");
      x = op(p + "/MatMul", "MatMul", {x, k}, {{"T", float_type()}});
      if (use_bias) x = op(p + "/BiasAdd", "BiasAdd", {x, weight(p + "/bias", name + "/bias")}, {{"T", float_type()}});
      return activation(p, c.at("activation").get<std::string>(), x);
    }
    if (type == "MaxPool2D") {
      const std::string p = prefix_for(name);
      // T defaults to DT_FLOAT and data_format to NHWC: neither is written.
      return op(p + "/MaxPool", "MaxPool", {x},
                {{"ksize", AttrValue::ints(spatial(c.at("pool_size")))},
                 {"strides", AttrValue::ints(spatial(c.at("strides")))},
                 {"padding", padding(c)}});
    }
    if (type == "Flatten") {
      if (layer.input_shape().rank() == 1) return x;
      const std::string p = prefix_for(name);
      const std::vector<int32_t> target{-1, static_cast<int32_t>(layer.output_shape().numel())};
      const std::string s = constant(p + "/shape", TensorValue{DT_INT32, {2}, int32_bytes(target)});
      return op(p + "/Reshape", "Reshape", {x, s}, {{"T", float_type()}});  // Tshape defaults to DT_INT32
    }
    if (type == "BatchNormalization") {
      const std::string p = prefix_for(name);
      const FoldedBatchNorm bn = fold_batch_norm(
          tensor(name + "/gamma").values, tensor(name + "/beta").values, tensor(name + "/moving_mean").values,
          tensor(name + "/moving_variance").values, static_cast<float>(c.at("epsilon").get<double>()));
      const int64_t channels = static_cast<int64_t>(bn.scale.size());
      x = op(p + "/Mul", "Mul", {x, float_constant(p + "/scale", {channels}, bn.scale)}, {{"T", float_type()}});
      return op(p + "/AddV2", "AddV2", {x, float_constant(p + "/shift", {channels}, bn.shift)}, {{"T", float_type()}});
    }
    if (type == "Dropout") return x;  // identity at inference
    if (type == "ReLU") return activation(prefix_for(name), "relu", x);
    if (type == "Softmax") return activation(prefix_for(name), "softmax", x);
    if (type == "Activation") {
      const std::string act = c.at("activation").get<std::string>();
      return act == "linear" ? x : activation(prefix_for(name), act, x);
    }
    throw_invalid("layer '" + name + "' of type " + type + " cannot be exported to a SavedModel",
                  "supported: Dense, Conv2D, MaxPool2D, Flatten, Dropout, BatchNormalization, ReLU, Softmax, "
                  "Activation");
  }

  const Model& model_;
  std::map<std::string, const NamedTensor*> tensors_;
  std::set<std::string> used_;
  Graph graph_;
};

// ---- encoding ----------------------------------------------------------------------------------

void fill_shape(const std::vector<int64_t>& dims, tensorflow::TensorShapeProto* shape) {
  for (int64_t d : dims) shape->add_dim()->set_size(d);
}

void fill_tensor(const TensorValue& t, tensorflow::TensorProto* tensor) {
  tensor->set_dtype(static_cast<tensorflow::DataType>(t.dtype));
  fill_shape(t.shape, tensor->mutable_tensor_shape());  // present even for a scalar
  tensor->set_tensor_content(t.content);
}

void fill_attr(const AttrValue& a, tensorflow::AttrValue* attr) {  // a oneof: always present
  switch (a.kind) {
    case AttrValue::Kind::IntList: {
      tensorflow::AttrValue::ListValue* list = attr->mutable_list();  // present even when empty
      for (int64_t v : a.list) list->add_i(v);
      break;
    }
    case AttrValue::Kind::String: attr->set_s(a.s); break;
    case AttrValue::Kind::Int: attr->set_i(a.i); break;
    case AttrValue::Kind::Type: attr->set_type(static_cast<tensorflow::DataType>(a.i)); break;
    case AttrValue::Kind::Shape: fill_shape(a.list, attr->mutable_shape()); break;
    case AttrValue::Kind::Tensor: fill_tensor(a.tensor, attr->mutable_tensor()); break;
  }
}

void fill_node(const NodeDef& n, tensorflow::NodeDef* node) {
  node->set_name(n.name);
  node->set_op(n.op);
  for (const std::string& in : n.inputs) node->add_input(in);
  for (const auto& [key, value] : n.attrs) fill_attr(value, &(*node->mutable_attr())[key]);
}

void fill_tensor_info(const TensorInfo& t, tensorflow::SignatureDef* signature, bool input) {
  tensorflow::TensorInfo& info = (*(input ? signature->mutable_inputs() : signature->mutable_outputs()))[t.key];
  info.set_name(t.name);
  info.set_dtype(static_cast<tensorflow::DataType>(t.dtype));
  fill_shape(t.shape, info.mutable_tensor_shape());
}

}  // namespace

Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors) {
  return GraphBuilder(model, tensors).build();
}

std::string encode_saved_model(const Graph& graph) {
  tensorflow::SavedModel saved_model;
  saved_model.set_saved_model_schema_version(1);
  tensorflow::MetaGraphDef* meta_graph = saved_model.add_meta_graphs();
  meta_graph->mutable_meta_info_def()->add_tags(kServeTag);
  meta_graph->mutable_meta_info_def()->set_stripped_default_attrs(true);

  tensorflow::GraphDef* graph_def = meta_graph->mutable_graph_def();
  for (const NodeDef& n : graph.nodes) fill_node(n, graph_def->add_node());
  graph_def->mutable_versions()->set_producer(static_cast<int32_t>(graph.producer));

  tensorflow::SignatureDef& signature = (*meta_graph->mutable_signature_def())[kSignatureKey];
  fill_tensor_info(graph.input, &signature, true);
  fill_tensor_info(graph.output, &signature, false);
  signature.set_method_name(kPredictMethod);
  return deterministic_bytes(saved_model);
}

// ---- reading back ------------------------------------------------------------------------------

namespace {

constexpr const char* kNotSavedModel = "the file is not a SavedModel; re-export the model with --format savedmodel";

std::vector<int64_t> dims_of(const tensorflow::TensorShapeProto& shape, const std::string& where) {
  std::vector<int64_t> dims;
  for (const auto& dim : shape.dim()) {
    if (dim.size() < -1)
      throw_data(where + ": a tensor shape has the dimension " + std::to_string(dim.size()) + " (below -1: not a size)",
                 kNotSavedModel);
    dims.push_back(dim.size());
  }
  return dims;
}

json tensor_info_json(const tensorflow::TensorInfo& info, const std::string& where) {
  return json{{"name", printable(info.name())},
              {"dtype", data_type_name(info.dtype())},
              {"shape", dims_of(info.tensor_shape(), where)}};
}

json meta_graph_json(const tensorflow::MetaGraphDef& meta, const std::string& where) {
  json m{{"tags", json::array()}, {"signatures", json::object()}, {"nodes", 0}, {"ops", json::object()}};
  for (const std::string& tag : meta.meta_info_def().tags()) m["tags"].push_back(printable(tag));
  const tensorflow::GraphDef& graph = meta.graph_def();
  m["nodes"] = graph.node_size();
  for (const tensorflow::NodeDef& node : graph.node()) {
    const std::string op = printable(node.op());
    m["ops"][op] = m["ops"].value(op, 0) + 1;
  }
  if (graph.versions().producer() != 0) m["producer"] = graph.versions().producer();  // 0: not on the wire
  auto tensors = [&](const google::protobuf::Map<std::string, tensorflow::TensorInfo>& infos) {
    json j = json::object();
    for (const auto& [name, info] : infos) j[printable(name)] = tensor_info_json(info, where);
    return j;
  };
  for (const auto& [key, signature] : meta.signature_def())
    m["signatures"][printable(key)] = json{{"inputs", tensors(signature.inputs())},
                                           {"outputs", tensors(signature.outputs())},
                                           {"method_name", printable(signature.method_name())}};
  return m;
}

}  // namespace

json describe_saved_model(const std::string& data, const std::string& where) {
  tensorflow::SavedModel saved_model;
  parse_message(saved_model, data, where, kNotSavedModel);
  json out{{"file", kSavedModelFileName}, {"bytes", data.size()}};
  if (saved_model.saved_model_schema_version() != 0) out["schema_version"] = saved_model.saved_model_schema_version();
  out["meta_graphs"] = saved_model.meta_graphs_size();
  if (saved_model.meta_graphs().empty())
    throw_data(where + ": the SavedModel holds no MetaGraphDef", "re-export the model with --format savedmodel");

  // Describe the meta graph TF Serving would load: tags exactly {"serve"}, else the first one.
  json chosen;
  for (const tensorflow::MetaGraphDef& meta : saved_model.meta_graphs()) {
    json m = meta_graph_json(meta, where);
    if (chosen.is_null() || (m["tags"] == json::array({kServeTag}) && chosen["tags"] != json::array({kServeTag})))
      chosen = std::move(m);
  }
  out.update(chosen);
  return out;
}

}  // namespace tandem::savedmodel

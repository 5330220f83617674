#include "export/savedmodel_writer.h"

#include <cctype>
#include <set>

#include "engine/errors.h"
#include "export/exporter.h"
#include "export/protobuf.h"

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
    return constant(name, TensorValue{DT_FLOAT, shape, proto::float_bytes(values)});
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
      const std::string s = constant(p + "/shape", TensorValue{DT_INT32, {2}, proto::int32_bytes(target)});
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

proto::Writer shape_proto(const std::vector<int64_t>& dims) {  // TensorShapeProto
  proto::Writer w;
  for (int64_t d : dims) {
    proto::Writer dim;
    dim.int64(1, d);
    w.message(2, dim);
  }
  return w;
}

proto::Writer tensor_proto(const TensorValue& t) {  // TensorProto
  proto::Writer w;
  w.uint(1, static_cast<uint64_t>(t.dtype));
  w.message(2, shape_proto(t.shape));
  if (!t.content.empty()) w.bytes(4, t.content);
  return w;
}

proto::Writer attr_proto(const AttrValue& a) {  // AttrValue (a oneof: always written)
  proto::Writer w;
  switch (a.kind) {
    case AttrValue::Kind::IntList: {
      proto::Writer list;
      list.packed_int64(3, a.list);
      w.message(1, list);
      break;
    }
    case AttrValue::Kind::String: w.bytes(2, a.s); break;
    case AttrValue::Kind::Int: w.int64(3, a.i); break;
    case AttrValue::Kind::Type: w.uint(6, static_cast<uint64_t>(a.i)); break;
    case AttrValue::Kind::Shape: w.message(7, shape_proto(a.list)); break;
    case AttrValue::Kind::Tensor: w.message(8, tensor_proto(a.tensor)); break;
  }
  return w;
}

proto::Writer node_proto(const NodeDef& n) {  // NodeDef
  proto::Writer w;
  w.bytes(1, n.name);
  w.bytes(2, n.op);
  for (const std::string& in : n.inputs) w.bytes(3, in);
  for (const auto& [key, value] : n.attrs) {
    proto::Writer entry;
    entry.bytes(1, key);
    entry.message(2, attr_proto(value));
    w.message(5, entry);
  }
  return w;
}

proto::Writer tensor_info_proto(const TensorInfo& t) {  // TensorInfo
  proto::Writer w;
  w.bytes(1, t.name);
  w.uint(2, static_cast<uint64_t>(t.dtype));
  w.message(3, shape_proto(t.shape));
  return w;
}

proto::Writer map_entry(const std::string& key, const proto::Writer& value) {
  proto::Writer e;
  e.bytes(1, key);
  e.message(2, value);
  return e;
}

}  // namespace

Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors) {
  return GraphBuilder(model, tensors).build();
}

std::string encode_saved_model(const Graph& graph) {
  proto::Writer graph_def;
  for (const NodeDef& n : graph.nodes) graph_def.message(1, node_proto(n));
  proto::Writer versions;
  versions.int64(1, graph.producer);
  graph_def.message(4, versions);

  proto::Writer signature;
  signature.message(1, map_entry(graph.input.key, tensor_info_proto(graph.input)));
  signature.message(2, map_entry(graph.output.key, tensor_info_proto(graph.output)));
  signature.bytes(3, kPredictMethod);

  proto::Writer meta_info;
  meta_info.bytes(4, kServeTag);
  meta_info.boolean(7, true);  // stripped_default_attrs

  proto::Writer meta_graph;
  meta_graph.message(1, meta_info);
  meta_graph.message(2, graph_def);
  meta_graph.message(5, map_entry(kSignatureKey, signature));

  proto::Writer saved_model;
  saved_model.int64(1, 1);  // saved_model_schema_version
  saved_model.message(2, meta_graph);
  return saved_model.take();
}

// ---- reading back ------------------------------------------------------------------------------

namespace {

struct Reader {
  const std::string& where;
  std::vector<proto::Field> fields(std::string_view data) const { return proto::parse_message(data, where); }
  std::string_view bytes(const proto::Field& f, const char* what) const {
    if (f.type != proto::WireType::Bytes)
      throw_data(where + ": " + what + " has the wrong wire type", "the file is not a SavedModel; re-export the model");
    return f.bytes;
  }
  std::string str(const proto::Field& f, const char* what) const { return proto::printable(bytes(f, what)); }
  int64_t integer(const proto::Field& f, const char* what) const {
    if (f.type != proto::WireType::Varint)
      throw_data(where + ": " + what + " has the wrong wire type", "the file is not a SavedModel; re-export the model");
    return f.as_int64();
  }
  std::vector<int64_t> shape(std::string_view data) const {
    std::vector<int64_t> dims;
    for (const proto::Field& f : fields(data)) {
      if (f.number != 2) continue;
      int64_t size = 0;
      for (const proto::Field& d : fields(bytes(f, "TensorShapeProto.dim")))
        if (d.number == 1) size = integer(d, "Dim.size");
      dims.push_back(size);
    }
    return dims;
  }
  json tensor_info(std::string_view data) const {
    json j{{"name", ""}, {"dtype", data_type_name(0)}, {"shape", json::array()}};
    for (const proto::Field& f : fields(data)) {
      if (f.number == 1) j["name"] = str(f, "TensorInfo.name");
      if (f.number == 2) j["dtype"] = data_type_name(static_cast<int>(integer(f, "TensorInfo.dtype")));
      if (f.number == 3) j["shape"] = shape(bytes(f, "TensorInfo.tensor_shape"));
    }
    return j;
  }
  // A map<string, M> entry: key and the value's bytes.
  std::pair<std::string, std::string_view> entry(const proto::Field& f, const char* what) const {
    std::string key;
    std::string_view value;
    for (const proto::Field& e : fields(bytes(f, what))) {
      if (e.number == 1) key = str(e, what);
      if (e.number == 2) value = bytes(e, what);
    }
    return {key, value};
  }
};

}  // namespace

json describe_saved_model(const std::string& data, const std::string& where) {
  const Reader r{where};
  json out{{"file", kSavedModelFileName}, {"bytes", data.size()}};
  std::vector<std::string_view> metas;
  for (const proto::Field& f : r.fields(data)) {
    if (f.number == 1) out["schema_version"] = r.integer(f, "SavedModel.saved_model_schema_version");
    if (f.number == 2) metas.push_back(r.bytes(f, "SavedModel.meta_graphs"));
  }
  out["meta_graphs"] = metas.size();
  if (metas.empty())
    throw_data(where + ": the SavedModel holds no MetaGraphDef", "re-export the model with --format savedmodel");

  // Describe the meta graph TF Serving would load: tags exactly {"serve"}, else the first one.
  json chosen;
  for (std::string_view meta : metas) {
    json m{{"tags", json::array()}, {"signatures", json::object()}, {"nodes", 0}, {"ops", json::object()}};
    for (const proto::Field& f : r.fields(meta)) {
      if (f.number == 1) {
        for (const proto::Field& i : r.fields(r.bytes(f, "MetaGraphDef.meta_info_def")))
          if (i.number == 4) m["tags"].push_back(r.str(i, "MetaInfoDef.tags"));
      } else if (f.number == 2) {
        int64_t nodes = 0;
        for (const proto::Field& g : r.fields(r.bytes(f, "MetaGraphDef.graph_def"))) {
          if (g.number == 1) {
            ++nodes;
            for (const proto::Field& n : r.fields(r.bytes(g, "GraphDef.node")))
              if (n.number == 2) {
                const std::string op = r.str(n, "NodeDef.op");
                m["ops"][op] = m["ops"].value(op, 0) + 1;
              }
          } else if (g.number == 4) {
            for (const proto::Field& v : r.fields(r.bytes(g, "GraphDef.versions")))
              if (v.number == 1) m["producer"] = r.integer(v, "VersionDef.producer");
          }
        }
        m["nodes"] = nodes;
      } else if (f.number == 5) {
        auto [key, value] = r.entry(f, "MetaGraphDef.signature_def");
        json sig{{"inputs", json::object()}, {"outputs", json::object()}, {"method_name", ""}};
        for (const proto::Field& s : r.fields(value)) {
          if (s.number == 1 || s.number == 2) {
            auto [name, info] = r.entry(s, "SignatureDef.inputs/outputs");
            sig[s.number == 1 ? "inputs" : "outputs"][name] = r.tensor_info(info);
          } else if (s.number == 3) {
            sig["method_name"] = r.str(s, "SignatureDef.method_name");
          }
        }
        m["signatures"][key] = sig;
      }
    }
    if (chosen.is_null() || (m["tags"] == json::array({kServeTag}) && chosen["tags"] != json::array({kServeTag})))
      chosen = std::move(m);
  }
  out.update(chosen);
  return out;
}

}  // namespace tandem::savedmodel

#include "export/onnx_writer.h"

#include <algorithm>
#include <map>
#include <set>

#include "engine/errors.h"
#include "export/exporter.h"
#include "export/protobuf.h"

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
    graph_.initializers.push_back(Initializer{name, FLOAT, std::move(dims), proto::float_bytes(values)});
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

proto::Writer attribute_proto(const Attribute& a) {  // AttributeProto
  proto::Writer w;
  w.bytes(1, a.name);
  switch (a.kind) {
    case Attribute::Kind::Float:
      w.float32(2, a.f);
      w.uint(20, 1);
      break;
    case Attribute::Kind::Int:
      w.int64(3, a.i);
      w.uint(20, 2);
      break;
    case Attribute::Kind::String:
      w.bytes(4, a.s);
      w.uint(20, 3);
      break;
    case Attribute::Kind::Ints:
      w.repeated_int64(8, a.ints);
      w.uint(20, 7);
      break;
  }
  return w;
}

proto::Writer node_proto(const Node& n) {  // NodeProto
  proto::Writer w;
  for (const std::string& in : n.inputs) w.bytes(1, in);
  for (const std::string& out : n.outputs) w.bytes(2, out);
  w.bytes(3, n.name);
  w.bytes(4, n.op_type);
  for (const Attribute& a : n.attributes) w.message(5, attribute_proto(a));
  return w;
}

proto::Writer tensor_proto(const Initializer& t) {  // TensorProto
  proto::Writer w;
  w.repeated_int64(1, t.dims);
  w.uint(2, static_cast<uint64_t>(t.elem_type));
  w.bytes(8, t.name);
  w.bytes(9, t.raw_data);
  return w;
}

proto::Writer value_info_proto(const ValueInfo& v) {  // ValueInfoProto
  proto::Writer shape;
  for (int64_t d : v.dims) {
    proto::Writer dim;
    if (d < 0)
      dim.bytes(2, v.dim_param);
    else
      dim.int64(1, d);
    shape.message(1, dim);
  }
  proto::Writer tensor_type;
  tensor_type.uint(1, static_cast<uint64_t>(v.elem_type));
  tensor_type.message(2, shape);
  proto::Writer type;
  type.message(1, tensor_type);
  proto::Writer w;
  w.bytes(1, v.name);
  w.message(2, type);
  return w;
}

}  // namespace

Graph build_graph(const Model& model, const std::vector<NamedTensor>& tensors) {
  return GraphBuilder(model, tensors).build();
}

std::string encode_model(const Graph& graph) {
  proto::Writer g;
  for (const Node& n : graph.nodes) g.message(1, node_proto(n));
  g.bytes(2, graph.name);
  for (const Initializer& i : graph.initializers) g.message(5, tensor_proto(i));
  g.message(11, value_info_proto(graph.input));
  g.message(12, value_info_proto(graph.output));

  proto::Writer opset;
  opset.bytes(1, "");
  opset.int64(2, kOpsetVersion);

  proto::Writer model;
  model.int64(1, kIrVersion);
  model.bytes(2, "tandem");
  model.bytes(3, TANDEM_VERSION);
  model.message(7, g);
  model.message(8, opset);
  return model.take();
}

// ---- reading back ------------------------------------------------------------------------------

namespace {

struct Reader {
  const std::string& where;
  std::vector<proto::Field> fields(std::string_view data) const { return proto::parse_message(data, where); }
  [[noreturn]] void wrong(const char* what) const {
    throw_data(where + ": " + what + " has the wrong wire type", "the file is not an ONNX model; re-export the model");
  }
  std::string_view bytes(const proto::Field& f, const char* what) const {
    if (f.type != proto::WireType::Bytes) wrong(what);
    return f.bytes;
  }
  std::string str(const proto::Field& f, const char* what) const { return proto::printable(bytes(f, what)); }
  int64_t integer(const proto::Field& f, const char* what) const {
    if (f.type != proto::WireType::Varint) wrong(what);
    return f.as_int64();
  }
  json value_info(std::string_view data) const {
    json j{{"name", ""}, {"dtype", elem_type_name(0)}, {"shape", json::array()}, {"dim_params", json::array()}};
    for (const proto::Field& f : fields(data)) {
      if (f.number == 1) j["name"] = str(f, "ValueInfoProto.name");
      if (f.number != 2) continue;
      for (const proto::Field& t : fields(bytes(f, "ValueInfoProto.type"))) {
        if (t.number != 1) continue;  // tensor_type
        for (const proto::Field& tt : fields(bytes(t, "TypeProto.tensor_type"))) {
          if (tt.number == 1) j["dtype"] = elem_type_name(static_cast<int>(integer(tt, "Tensor.elem_type")));
          if (tt.number != 2) continue;
          for (const proto::Field& d : fields(bytes(tt, "Tensor.shape"))) {
            if (d.number != 1) continue;
            int64_t size = -1;
            std::string param;
            for (const proto::Field& dv : fields(bytes(d, "TensorShapeProto.dim"))) {
              if (dv.number == 1) size = integer(dv, "Dimension.dim_value");
              if (dv.number == 2) param = str(dv, "Dimension.dim_param");
            }
            j["shape"].push_back(size);
            j["dim_params"].push_back(param);
          }
        }
      }
    }
    return j;
  }
};

}  // namespace

json describe_onnx(const std::string& data, const std::string& where) {
  const Reader r{where};
  json out{{"file", kOnnxFileName},
           {"bytes", data.size()},
           {"producer_name", ""},
           {"producer_version", ""},
           {"nodes", 0},
           {"initializers", 0},
           {"ops", json::object()},
           {"inputs", json::array()},
           {"outputs", json::array()}};
  bool has_graph = false;
  for (const proto::Field& f : r.fields(data)) {
    if (f.number == 1) out["ir_version"] = r.integer(f, "ModelProto.ir_version");
    if (f.number == 2) out["producer_name"] = r.str(f, "ModelProto.producer_name");
    if (f.number == 3) out["producer_version"] = r.str(f, "ModelProto.producer_version");
    if (f.number == 8) {
      std::string domain;
      int64_t version = 0;
      for (const proto::Field& o : r.fields(r.bytes(f, "ModelProto.opset_import"))) {
        if (o.number == 1) domain = r.str(o, "OperatorSetIdProto.domain");
        if (o.number == 2) version = r.integer(o, "OperatorSetIdProto.version");
      }
      if (domain.empty() || domain == "ai.onnx") out["opset"] = version;
    }
    if (f.number != 7) continue;
    has_graph = true;
    std::set<std::string> initializer_names;
    std::vector<json> inputs;
    int64_t nodes = 0, initializers = 0;
    for (const proto::Field& g : r.fields(r.bytes(f, "ModelProto.graph"))) {
      if (g.number == 1) {
        ++nodes;
        for (const proto::Field& n : r.fields(r.bytes(g, "GraphProto.node")))
          if (n.number == 4) {
            const std::string op = r.str(n, "NodeProto.op_type");
            out["ops"][op] = out["ops"].value(op, 0) + 1;
          }
      } else if (g.number == 5) {
        ++initializers;
        for (const proto::Field& t : r.fields(r.bytes(g, "GraphProto.initializer")))
          if (t.number == 8) initializer_names.insert(r.str(t, "TensorProto.name"));
      } else if (g.number == 11) {
        inputs.push_back(r.value_info(r.bytes(g, "GraphProto.input")));
      } else if (g.number == 12) {
        out["outputs"].push_back(r.value_info(r.bytes(g, "GraphProto.output")));
      }
    }
    out["nodes"] = nodes;
    out["initializers"] = initializers;
    for (json& in : inputs)  // before IR 4 initializers were listed as inputs too: not real inputs
      if (!initializer_names.count(in["name"].get<std::string>())) out["inputs"].push_back(std::move(in));
  }
  if (!has_graph) throw_data(where + ": the ONNX model has no graph", "re-export the model with --format onnx");
  return out;
}

}  // namespace tandem::onnx

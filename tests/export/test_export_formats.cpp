// Export formats: protobuf through libprotobuf, the SavedModel and ONNX graphs built per layer type,
// BatchNormalization folding, and `tandem export`'s atomic versioned directories.
// (Agreement of the exported models with TensorFlow and onnxruntime: tests/interop/export_check.py.)
#include <google/protobuf/unknown_field_set.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/errors.h"
#include "engine/model.h"
#include "export/exporter.h"
#include "storage/model_dir.h"
#include "export/onnx_writer.h"
#include "export/protobuf_io.h"
#include "storage/raw_bytes.h"
#include "export/savedmodel_writer.h"
#include "export_fixtures.h"
#include "kernels/backends.h"
#include "onnx/onnx.pb.h"
#include "temp_dir.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tandem::Error;
using tandem::ErrorKind;
using tandem::Model;
using tandem::NamedTensor;
using tandem::Shape;
using namespace tandem::test;  // temp_dir.h: TempDir, write_bytes
namespace sm = tandem::savedmodel;
namespace ox = tandem::onnx;

namespace {

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (!out.empty()) out += ' ';
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// This file's names for the shared helpers of temp_dir.h.
std::string file_bytes(const std::string& path) { return tandem::test::read_bytes(path); }

template <typename F>
Error error_of(F&& f) {
  return tandem::test::catch_error(std::forward<F>(f));
}

std::vector<std::string> tf_ops(const sm::Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes)
    if (n.op != "Const") ops.push_back(n.op);
  return ops;
}

std::vector<std::string> attr_keys(const sm::NodeDef& n) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : n.attrs) keys.push_back(k);
  return keys;
}

std::vector<std::string> entries(const std::string& dir) { return tandem::test::entries_of(dir); }

}  // namespace

// ---- protobuf through libprotobuf, raw tensor bytes ------------------------------------------------

TEST_CASE("protobuf: deterministic bytes, map entries in key order", "[cpu][export]") {
  tensorflow::NodeDef node;
  node.set_name("n");
  for (const char* key : {"strides", "T", "padding", "ksize"}) (*node.mutable_attr())[key].set_i(1);
  const std::string bytes = tandem::deterministic_bytes(node);
  CHECK(bytes == tandem::deterministic_bytes(node));
  // Read the wire back field by field: the attr entries (field 5) come out sorted by key.
  google::protobuf::UnknownFieldSet wire;
  REQUIRE(wire.ParseFromString(bytes));
  std::vector<std::string> keys;
  for (int i = 0; i < wire.field_count(); ++i) {
    if (wire.field(i).number() != 5) continue;
    google::protobuf::UnknownFieldSet entry;
    REQUIRE(entry.ParseFromString(wire.field(i).length_delimited()));
    keys.push_back(entry.field(0).length_delimited());
  }
  CHECK(keys == std::vector<std::string>{"T", "ksize", "padding", "strides"});

  // What TensorFlow reads: AttrValue{type: DT_FLOAT}, and a shape whose -1 takes 10 bytes.
  tensorflow::AttrValue type;
  type.set_type(tensorflow::DT_FLOAT);
  CHECK(hex(tandem::deterministic_bytes(type)) == "30 01");
  tensorflow::AttrValue shape;
  for (int64_t d : {-1, 28, 28, 1}) shape.mutable_shape()->add_dim()->set_size(d);
  CHECK(hex(tandem::deterministic_bytes(shape)) ==
        "3a 19 12 0b 08 ff ff ff ff ff ff ff ff ff 01 12 02 08 1c 12 02 08 1c 12 02 08 01");
}

TEST_CASE("protobuf: malformed input is a Data error naming the file", "[cpu][export]") {
  auto bad = [](const std::string& bytes) {
    tensorflow::SavedModel m;
    Error e = error_of([&] { tandem::parse_message(m, bytes, "thing.pb", "re-export"); });
    CHECK(e.kind() == ErrorKind::Data);
    CHECK(std::string(e.what()).find("thing.pb") != std::string::npos);
    CHECK(e.hint() == "re-export");
  };
  bad(std::string("\x08", 1));      // truncated varint value
  bad(std::string("\x08\x80", 2));  // varint continues past the end
  bad(
      std::string("\x12\x05"
                  "abc",
                  5));                                          // length past the end
  bad(std::string("\x0b", 1));                                  // a group that never ends
  bad(std::string("\x00\x01", 2));                              // field number 0
  bad(std::string("\x0d\x01\x02", 3));                          // truncated fixed32
  bad(std::string("\x08") + std::string(10, '\xff') + "\x01");  // varint over 10 bytes
  // meta_graphs[0].meta_info_def.tags[0] = "\xff": a proto3 string that is not UTF-8.
  bad(std::string("\x12\x05\x0a\x03\x22\x01\xff", 7));
  tensorflow::SavedModel empty;
  tandem::parse_message(empty, "", "x", "");  // an empty message is a message
  CHECK(empty.meta_graphs().empty());
}

TEST_CASE("raw bytes: little-endian tensors, printable names", "[cpu][export]") {
  CHECK(hex(tandem::float_bytes({1.0f})) == "00 00 80 3f");
  CHECK(hex(tandem::float_bytes({1.0f, -2.0f})) == "00 00 80 3f 00 00 00 c0");
  CHECK(hex(tandem::int32_bytes({-1, 2})) == "ff ff ff ff 02 00 00 00");
  CHECK(hex(tandem::int64_bytes({1})) == "01 00 00 00 00 00 00 00");
  CHECK(tandem::printable("dense_1/kernel") == "dense_1/kernel");
  CHECK(tandem::printable(std::string("a\xff\\\n\0", 5)) == "a\\xff\\x5c\\x0a\\x00");
}

// ---- BatchNormalization folding -------------------------------------------------------------------

TEST_CASE("export: folded BatchNormalization equals the backend's inference exactly", "[cpu][export]") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2.f, 2.f), pos(0.01f, 3.f);
  const int C = 7, rows = 5;
  std::vector<float> gamma(C), beta(C), mean(C), var(C), x(rows * C);
  for (int c = 0; c < C; ++c) {
    gamma[c] = u(rng);
    beta[c] = u(rng);
    mean[c] = u(rng);
    var[c] = pos(rng);
  }
  for (float& v : x) v = u(rng);
  const float eps = 1e-3f;
  const tandem::FoldedBatchNorm f = tandem::fold_batch_norm(gamma, beta, mean, var, eps);

  auto backend = tandem::make_backend(tandem::Device{}, 1);
  tandem::BatchNormParams p;
  p.rows = rows;
  p.channels = C;
  p.epsilon = eps;
  std::vector<float> y(x.size());
  backend->batchnorm_forward_infer(p, x.data(), gamma.data(), beta.data(), mean.data(), var.data(), y.data());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) {
      const float folded = x[r * C + c] * f.scale[c] + f.shift[c];
      CHECK(folded == y[r * C + c]);  // bit-identical: the exported graphs compute what Tandem computes
      const double exact = (double(x[r * C + c]) - mean[c]) / std::sqrt(double(var[c]) + eps) * gamma[c] + beta[c];
      CHECK(std::fabs(folded - exact) <= 1e-5 * (1 + std::fabs(exact)));
    }
}

// ---- SavedModel graph -------------------------------------------------------------------------------

TEST_CASE("savedmodel: the graph built for every layer type", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto tensors = weights_of(m);
  const sm::Graph g = sm::build_graph(m, tensors);

  CHECK(tf_ops(g) == std::vector<std::string>{"Placeholder", "Conv2D", "BiasAdd", "Relu", "Mul", "AddV2", "Relu",
                                              "MaxPool", "Conv2D", "MaxPool", "Reshape", "MatMul", "Mul", "AddV2",
                                              "Relu", "MatMul", "BiasAdd", "Softmax"});
  // Names are unique and every input names an earlier node.
  std::set<std::string> seen;
  for (const auto& n : g.nodes) {
    for (const auto& in : n.inputs) CHECK(seen.count(in) == 1);
    CHECK(seen.insert(n.name).second);
  }

  const sm::NodeDef* ph = g.find("input");
  REQUIRE(ph);
  CHECK(ph->op == "Placeholder");
  CHECK(ph->attrs.at("dtype").i == sm::DT_FLOAT);
  CHECK(ph->attrs.at("shape").list == std::vector<int64_t>{-1, 28, 28, 1});

  const sm::NodeDef* c1 = g.find("c1/Conv2D");
  REQUIRE(c1);
  CHECK(attr_keys(*c1) == std::vector<std::string>{"T", "padding", "strides"});  // required only
  CHECK(c1->attrs.at("padding").s == "SAME");
  CHECK(c1->attrs.at("strides").list == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(c1->inputs == std::vector<std::string>{"input", "c1/kernel"});
  const sm::NodeDef* k1 = g.find("c1/kernel");
  REQUIRE(k1);
  CHECK(k1->op == "Const");
  CHECK(attr_keys(*k1) == std::vector<std::string>{"dtype", "value"});
  const sm::TensorValue& kv = k1->attrs.at("value").tensor;
  CHECK(kv.shape == std::vector<int64_t>{3, 3, 1, 4});  // HWIO, a byte copy
  CHECK(kv.content == tandem::float_bytes(tensor_named(tensors, "c1/kernel").values));

  const sm::NodeDef* c2 = g.find("c2/Conv2D");
  REQUIRE(c2);
  CHECK(c2->attrs.at("strides").list == std::vector<int64_t>{1, 2, 2, 1});
  CHECK(g.find("c2/BiasAdd") == nullptr);  // use_bias: false

  const sm::NodeDef* p1 = g.find("p1/MaxPool");
  REQUIRE(p1);
  CHECK(attr_keys(*p1) == std::vector<std::string>{"ksize", "padding", "strides"});  // T defaults to float
  CHECK(p1->attrs.at("ksize").list == std::vector<int64_t>{1, 2, 2, 1});
  CHECK(p1->attrs.at("padding").s == "VALID");
  CHECK(g.find("p2/MaxPool")->attrs.at("padding").s == "SAME");
  CHECK(g.find("p2/MaxPool")->attrs.at("ksize").list == std::vector<int64_t>{1, 3, 3, 1});

  // Flatten: Reshape to [-1, H*W*C] with an int32 shape constant (the batch stays free).
  const Shape flat_in = m.layers()[7]->input_shape();
  const sm::NodeDef* shape = g.find("f/shape");
  REQUIRE(shape);
  CHECK(shape->attrs.at("dtype").i == sm::DT_INT32);
  CHECK(shape->attrs.at("value").tensor.content == tandem::int32_bytes({-1, static_cast<int32_t>(flat_in.numel())}));
  CHECK(attr_keys(*g.find("f/Reshape")) == std::vector<std::string>{"T"});

  // BatchNormalization: Mul + AddV2 with the folded constants.
  const auto fold = tandem::fold_batch_norm(
      tensor_named(tensors, "bn2/gamma").values, tensor_named(tensors, "bn2/beta").values,
      tensor_named(tensors, "bn2/moving_mean").values, tensor_named(tensors, "bn2/moving_variance").values, 0.01f);
  CHECK(g.find("bn2/scale")->attrs.at("value").tensor.content == tandem::float_bytes(fold.scale));
  CHECK(g.find("bn2/shift")->attrs.at("value").tensor.content == tandem::float_bytes(fold.shift));
  CHECK(g.find("bn2/Mul")->inputs == std::vector<std::string>{"h/MatMul", "bn2/scale"});
  CHECK(g.find("bn2/AddV2")->inputs == std::vector<std::string>{"bn2/Mul", "bn2/shift"});

  // Dropout and a linear Activation add nothing; the output is the last Softmax.
  for (const auto& n : g.nodes) {
    CHECK(n.name.rfind("d1/", 0) != 0);
    CHECK(n.name.rfind("lin/", 0) != 0);
  }
  CHECK(g.find("out/MatMul")->inputs[0] == "a1/Relu");
  CHECK(g.input.name == "input:0");
  CHECK(g.input.shape == std::vector<int64_t>{-1, 28, 28, 1});
  CHECK(g.output.key == "probabilities");
  CHECK(g.output.name == "out/Softmax:0");
  CHECK(g.output.shape == std::vector<int64_t>{-1, 10});
}

TEST_CASE("savedmodel: layer names TensorFlow would reject get a valid prefix", "[cpu][export]") {
  const Model m = Model::from_spec(json::parse(R"({"input_shape": [4], "layers": [
      {"type": "Dense", "name": "_hidden", "units": 3, "activation": "relu"},
      {"type": "Dense", "name": "layer_hidden", "units": 3},
      {"type": "Dense", "name": "-x.y", "units": 2, "activation": "softmax"}]})"),
                                   "test spec");
  const sm::Graph g = sm::build_graph(m, weights_of(m));
  CHECK(g.find("layer_hidden/MatMul"));    // "_hidden" -> "layer_hidden"
  CHECK(g.find("layer_hidden_1/MatMul"));  // the real "layer_hidden" is not confused with it
  CHECK(g.find("layer-x.y/Softmax"));
  CHECK(tf_ops(g) == std::vector<std::string>{"Placeholder", "MatMul", "BiasAdd", "Relu", "MatMul", "BiasAdd", "MatMul",
                                              "BiasAdd", "Softmax"});
  CHECK(g.input.shape == std::vector<int64_t>{-1, 4});  // a flat input needs no Reshape
  // The kernels still come from the right tensors.
  CHECK(g.find("layer_hidden/kernel")->attrs.at("value").tensor.shape == std::vector<int64_t>{4, 3});
  CHECK(g.find("layer_hidden_1/kernel")->attrs.at("value").tensor.shape == std::vector<int64_t>{3, 3});
}

TEST_CASE("savedmodel: encoded SavedModel reads back", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto tensors = weights_of(m);
  const std::string pb = sm::encode_saved_model(sm::build_graph(m, tensors));
  CHECK(pb == sm::encode_saved_model(sm::build_graph(m, tensors)));  // deterministic

  // Read back with the generated classes: SavedModel{1, MetaGraphDef{MetaInfoDef{["serve"], stripped}, ...}}.
  tensorflow::SavedModel saved;
  REQUIRE(saved.ParseFromString(pb));
  CHECK(saved.saved_model_schema_version() == 1);
  REQUIRE(saved.meta_graphs_size() == 1);
  const tensorflow::MetaGraphDef& meta = saved.meta_graphs(0);
  CHECK(meta.meta_info_def().tags().size() == 1);
  CHECK(meta.meta_info_def().tags(0) == "serve");
  CHECK(meta.meta_info_def().stripped_default_attrs());
  const tensorflow::GraphDef& graph = meta.graph_def();
  CHECK(graph.versions().producer() == sm::kGraphProducer);
  REQUIRE(graph.node_size() > 1);
  CHECK(graph.node(graph.node_size() - 1).name() == "out/Softmax");
  const tensorflow::NodeDef& node = graph.node(0);
  CHECK(node.name() == "input");
  CHECK(node.op() == "Placeholder");
  CHECK(node.attr().size() == 2);
  CHECK(node.attr().at("dtype").type() == tensorflow::DT_FLOAT);
  const auto& dims = node.attr().at("shape").shape().dim();
  CHECK(std::vector<int64_t>{dims[0].size(), dims[1].size(), dims[2].size(), dims[3].size()} ==
        std::vector<int64_t>{-1, 28, 28, 1});
  const tensorflow::NodeDef& kernel = graph.node(1);
  CHECK(kernel.name() == "c1/kernel");
  CHECK(kernel.attr().at("value").tensor().tensor_content() ==
        tandem::float_bytes(tensor_named(tensors, "c1/kernel").values));
  CHECK(tandem::deterministic_bytes(saved) == pb);  // what the writer wrote is what it filled in

  const json d = sm::describe_saved_model(pb, "pb");
  CHECK(d["schema_version"] == 1);
  CHECK(d["tags"] == json::array({"serve"}));
  CHECK(d["producer"] == sm::kGraphProducer);
  CHECK(d["ops"]["Conv2D"] == 2);
  CHECK(d["ops"]["Softmax"] == 1);
  const json& sig = d["signatures"]["serving_default"];
  CHECK(sig["method_name"] == "tensorflow/serving/predict");
  CHECK(sig["inputs"]["input"] == json{{"name", "input:0"}, {"dtype", "DT_FLOAT"}, {"shape", {-1, 28, 28, 1}}});
  CHECK(sig["outputs"]["probabilities"] == json{{"name", "out/Softmax:0"}, {"dtype", "DT_FLOAT"}, {"shape", {-1, 10}}});

  // Truncation anywhere is a Data error, never a crash.
  for (size_t cut : {size_t{1}, size_t{5}, pb.size() / 2, pb.size() - 1}) {
    Error e = error_of([&] { sm::describe_saved_model(pb.substr(0, cut), "saved_model.pb"); });
    CHECK(e.kind() == ErrorKind::Data);
  }
}

// ---- ONNX graph ---------------------------------------------------------------------------------

TEST_CASE("onnx: the graph built for every layer type", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto tensors = weights_of(m);
  const ox::Graph g = ox::build_graph(m, tensors);
  std::vector<std::string> ops;
  for (const auto& n : g.nodes) ops.push_back(n.op_type);
  CHECK(ops == std::vector<std::string>{"Transpose", "Conv", "Relu", "Mul", "Add", "Relu", "MaxPool", "Conv", "MaxPool",
                                        "Transpose", "Flatten", "MatMul", "Mul", "Add", "Relu", "Gemm", "Softmax"});
  CHECK(g.nodes.front().attribute("perm")->ints == std::vector<int64_t>{0, 3, 1, 2});
  CHECK(g.nodes[9].attribute("perm")->ints == std::vector<int64_t>{0, 2, 3, 1});  // back to NHWC before Flatten
  CHECK(g.nodes.front().inputs[0] == "input");
  CHECK(g.nodes.back().outputs[0] == "probabilities");
  CHECK(g.nodes.back().attribute("axis")->i == -1);

  // Every input is the graph input, an initializer or an earlier node's output.
  std::set<std::string> known{"input"};
  for (const auto& i : g.initializers) known.insert(i.name);
  for (const auto& n : g.nodes) {
    for (const auto& in : n.inputs) CHECK(known.count(in) == 1);
    for (const auto& out : n.outputs) CHECK(known.insert(out).second);
  }

  // Conv: kernel HWIO -> OIHW, TF "same" padding as explicit pads.
  const ox::Node& c1 = g.nodes[1];
  CHECK(c1.inputs == std::vector<std::string>{"c1/to_nchw", "c1/kernel", "c1/bias"});
  CHECK(c1.attribute("kernel_shape")->ints == std::vector<int64_t>{3, 3});
  CHECK(c1.attribute("pads")->ints == std::vector<int64_t>{1, 1, 1, 1});
  const ox::Initializer* k2 = g.initializer("c2/kernel");
  REQUIRE(k2);
  CHECK(k2->dims == std::vector<int64_t>{6, 4, 3, 2});           // O, I, H, W
  const NamedTensor& hwio = tensor_named(tensors, "c2/kernel");  // (3, 2, 4, 6)
  std::vector<float> oihw(hwio.values.size());
  std::memcpy(oihw.data(), k2->raw_data.data(), k2->raw_data.size());
  for (int h = 0; h < 3; ++h)
    for (int w = 0; w < 2; ++w)
      for (int i = 0; i < 4; ++i)
        for (int o = 0; o < 6; ++o)
          CHECK(oihw[((o * 4 + i) * 3 + h) * 2 + w] == hwio.values[((h * 2 + w) * 4 + i) * 6 + o]);
  // c2: input 14x14, kernel 3x2, stride 2, same: out 7x7, total pads H = 6*2+3-14 = 1, W = 6*2+2-14 = 0.
  const ox::Node& c2 = g.nodes[7];
  CHECK(c2.inputs.size() == 2);  // no bias
  CHECK(c2.attribute("strides")->ints == std::vector<int64_t>{2, 2});
  CHECK(c2.attribute("pads")->ints == std::vector<int64_t>{0, 0, 1, 0});  // top, left, bottom, right
  CHECK(g.nodes[6].attribute("pads") == nullptr);                         // valid pooling
  // p2: input 7x7, pool 3, stride 2, same: out 4x4, total 3*2+3-7 = 2 -> 1 before, 1 after.
  CHECK(g.nodes[8].attribute("pads")->ints == std::vector<int64_t>{1, 1, 1, 1});

  // BatchNormalization constants broadcast over NCHW ([C, 1, 1]) or a flat vector ([C]).
  CHECK(g.initializer("bn1/scale")->dims == std::vector<int64_t>{4, 1, 1});
  CHECK(g.initializer("bn2/scale")->dims == std::vector<int64_t>{8});
  CHECK(g.initializer("out/kernel")->dims == std::vector<int64_t>{8, 10});  // Gemm takes [in, out] as is

  CHECK(g.input.dims == std::vector<int64_t>{-1, 28, 28, 1});
  CHECK(g.output.dims == std::vector<int64_t>{-1, 10});

  const std::string bytes = ox::encode_model(g);
  CHECK(bytes == ox::encode_model(ox::build_graph(m, tensors)));
  ::onnx::ModelProto model;  // read back with the generated classes
  REQUIRE(model.ParseFromString(bytes));
  REQUIRE(model.opset_import_size() == 1);
  CHECK(model.opset_import(0).has_domain());  // "" written out: the default domain
  CHECK(model.graph().node(0).attribute(0).type() == ::onnx::AttributeProto::INTS);
  CHECK(model.graph().initializer(0).raw_data() == g.initializers[0].raw_data);
  CHECK(model.graph().input(0).type().tensor_type().shape().dim(0).dim_param() == "batch");
  CHECK(tandem::deterministic_bytes(model) == bytes);
  const json d = ox::describe_onnx(bytes, "model.onnx");
  CHECK(d["ir_version"] == 8);
  CHECK(d["opset"] == 17);
  CHECK(d["producer_name"] == "tandem");
  CHECK(d["nodes"] == 17);
  CHECK(d["initializers"] == g.initializers.size());
  CHECK(d["ops"]["Transpose"] == 2);
  CHECK(
      d["inputs"] ==
      json::array({json{
          {"name", "input"}, {"dtype", "FLOAT"}, {"shape", {-1, 28, 28, 1}}, {"dim_params", {"batch", "", "", ""}}}}));
  CHECK(d["outputs"][0]["name"] == "probabilities");
  CHECK(d["outputs"][0]["shape"] == json::array({-1, 10}));
  Error e = error_of([&] { ox::describe_onnx(bytes.substr(0, bytes.size() / 3), "model.onnx"); });
  CHECK(e.kind() == ErrorKind::Data);
}

TEST_CASE("onnx: a model without images needs no transposes", "[cpu][export]") {
  const Model m = Model::from_spec(Model::preset("mlp"), "mlp");
  const ox::Graph g = ox::build_graph(m, weights_of(m));
  std::vector<std::string> ops;
  for (const auto& n : g.nodes) ops.push_back(n.op_type);
  CHECK(ops == std::vector<std::string>{"Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"});
}

TEST_CASE("export: weights that do not belong to the model are refused", "[cpu][export]") {
  const Model m = all_layers_model();
  auto tensors = weights_of(m);
  tensors.pop_back();
  CHECK(error_of([&] { sm::build_graph(m, tensors); }).kind() == ErrorKind::Data);
  CHECK(error_of([&] { ox::build_graph(m, tensors); }).kind() == ErrorKind::Data);
}

TEST_CASE("export: describing files of other producers, and shapes that are not sizes", "[cpu][export]") {
  const Model m = Model::from_spec(Model::preset("mlp"), "mlp");
  const auto tensors = weights_of(m);
  const std::string pb = sm::encode_saved_model(sm::build_graph(m, tensors));
  const std::string onnx = ox::encode_model(ox::build_graph(m, tensors));

  // Fields the subsets do not declare (another producer's saver_def, a newer ONNX field) are skipped.
  tensorflow::SavedModel saved;
  REQUIRE(saved.ParseFromString(pb));
  tensorflow::MetaGraphDef* meta = saved.mutable_meta_graphs(0);
  google::protobuf::UnknownFieldSet* extra = meta->GetReflection()->MutableUnknownFields(meta);
  extra->AddLengthDelimited(3, "\x0a\x04save");  // SaverDef{filename_tensor_name}
  extra->AddVarint(99, 7);
  json want = sm::describe_saved_model(pb, "pb");
  json got = sm::describe_saved_model(tandem::deterministic_bytes(saved), "pb");
  CHECK(got["bytes"] > want["bytes"]);
  got.erase("bytes");
  want.erase("bytes");
  CHECK(got == want);
  json onnx_want = ox::describe_onnx(onnx, "model.onnx");
  json onnx_got = ox::describe_onnx(onnx + std::string("\xa8\x06\x01", 3), "model.onnx");  // field 101: 1
  onnx_got.erase("bytes");
  onnx_want.erase("bytes");
  CHECK(onnx_got == onnx_want);

  // A dimension below -1 (unknown) is refused, naming the file.
  REQUIRE(saved.ParseFromString(pb));
  (*saved.mutable_meta_graphs(0)->mutable_signature_def())["serving_default"]
      .mutable_inputs()
      ->at("input")
      .mutable_tensor_shape()
      ->mutable_dim(1)
      ->set_size(-2);
  Error e = error_of([&] { sm::describe_saved_model(tandem::deterministic_bytes(saved), "saved_model.pb"); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("saved_model.pb") != std::string::npos);
  ::onnx::ModelProto model;
  REQUIRE(model.ParseFromString(onnx));
  model.mutable_graph()
      ->mutable_output(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(1)
      ->set_dim_value(-3);
  e = error_of([&] { ox::describe_onnx(tandem::deterministic_bytes(model), "model.onnx"); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("model.onnx") != std::string::npos);
}

TEST_CASE("export: describing mutated files never crashes", "[cpu][export]") {
  const Model m = Model::from_spec(json::parse(R"({"input_shape": [4, 4, 1], "layers": [
      {"type": "Conv2D", "name": "c", "filters": 2, "kernel_size": 3, "padding": "same"},
      {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})"),
                                   "test spec");
  const auto tensors = weights_of(m);
  const std::string files[2] = {sm::encode_saved_model(sm::build_graph(m, tensors)),
                                ox::encode_model(ox::build_graph(m, tensors))};
  std::mt19937 rng(11);
  int parsed = 0, refused = 0;
  for (int round = 0; round < 400; ++round) {
    std::string bytes = files[round % 2];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng() & 0xff);
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    try {
      const json d = round % 2 ? ox::describe_onnx(bytes, "f") : sm::describe_saved_model(bytes, "f");
      CHECK_NOTHROW(d.dump());  // any name read from the file is valid UTF-8 JSON
      ++parsed;
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Data);
      ++refused;
    }
  }
  CHECK(parsed + refused == 400);
}

// ---- export_model: versioned, atomic directories ----------------------------------------------------

TEST_CASE("export: formats", "[cpu][export]") {
  CHECK(tandem::parse_export_formats("savedmodel") == std::vector<std::string>{"savedmodel"});
  CHECK(tandem::parse_export_formats(" SavedModel , onnx") == std::vector<std::string>{"savedmodel", "onnx"});
  CHECK(tandem::parse_export_formats("onnx,native,onnx") == std::vector<std::string>{"native", "onnx"});
  CHECK(tandem::parse_export_formats("tflite,onnx") == std::vector<std::string>{"onnx", "tflite"});
  CHECK(tandem::parse_export_formats("tfjs, TFLite") == std::vector<std::string>{"tflite", "tfjs"});
  CHECK(tandem::parse_export_formats("all") ==
        std::vector<std::string>{"native", "savedmodel", "onnx", "tflite", "tfjs"});
  for (const char* bad : {"", ",", "coreml", "onnx,", "savedmodel,,onnx", "tf lite"}) {
    Error e = error_of([&] { tandem::parse_export_formats(bad); });
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK(e.hint().find("--format") != std::string::npos);
  }
}

TEST_CASE("export: writes versions, next free version, refuses to overwrite", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const std::string src = write_source(tmp, m, weights_of(m));
  const std::string base = tmp / "serving/all";

  const std::string v1 = tandem::export_model(src, base, 0, "native", false);
  CHECK(v1 == base + "/1");
  CHECK(entries(v1) == std::vector<std::string>{"model.json", "weights.tdw"});
  CHECK(file_bytes(v1 + "/weights.tdw") == file_bytes(src + "/weights.tdw"));
  CHECK(file_bytes(v1 + "/model.json") == file_bytes(src + "/model.json"));
  CHECK(tandem::describe_export(v1)["formats"] == json::array({"native"}));

  const std::string v2 = tandem::export_model(src, base + "/", 0, "savedmodel,onnx", false);
  CHECK(v2 == base + "/2");
  CHECK(entries(v2) == std::vector<std::string>{"model.json", "model.onnx", "saved_model.pb", "weights.tdw"});
  tandem::read_model_version(v2);  // the native files still serve Tandem's tools
  const json d = tandem::describe_export(v2);
  CHECK(d["formats"] == json::array({"native", "savedmodel", "onnx"}));
  CHECK(d["native"]["name"] == "all_layers");
  CHECK(d["savedmodel"]["signatures"]["serving_default"]["inputs"]["input"]["shape"] == json::array({-1, 28, 28, 1}));
  CHECK(d["savedmodel"]["variables"] == false);
  CHECK(d["onnx"]["outputs"][0]["name"] == "probabilities");

  CHECK(tandem::export_model(src, base, 7, "onnx", false) == base + "/7");
  CHECK(tandem::export_model(src, base, 0, "onnx", false) == base + "/8");
  CHECK(tandem::list_versions(base) == std::vector<int64_t>{1, 2, 7, 8});

  // An existing version is refused, and left as it was.
  Error e = error_of([&] { tandem::export_model(src, base, 1, "savedmodel", false); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK(std::string(e.what()).find(base + "/1") != std::string::npos);
  CHECK(e.hint().find("--overwrite") != std::string::npos);
  CHECK(entries(v1) == std::vector<std::string>{"model.json", "weights.tdw"});

  // --overwrite replaces the whole version.
  CHECK(tandem::export_model(src, base, 1, "savedmodel", true) == v1);
  CHECK(entries(v1) == std::vector<std::string>{"model.json", "saved_model.pb", "weights.tdw"});
  // Exporting a version onto itself adds formats in place.
  CHECK(tandem::export_model(v1, base, 1, "savedmodel,onnx", true) == v1);
  CHECK(entries(v1) == std::vector<std::string>{"model.json", "model.onnx", "saved_model.pb", "weights.tdw"});
  CHECK(file_bytes(v1 + "/saved_model.pb") == file_bytes(v2 + "/saved_model.pb"));  // deterministic

  // No temporary directories are left behind.
  for (const auto& name : entries(base)) CHECK(name.rfind(".tmp", 0) != 0);
}

TEST_CASE("export: a failure leaves nothing behind", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const std::string src = write_source(tmp, m, weights_of(m));
  const std::string base = tmp / "serving/all";
  tandem::export_model(src, base, 1, "native", false);
  const std::string old_weights = file_bytes(base + "/1/weights.tdw");

  for (const std::string stage : {"files-written", "before-commit"}) {
    for (bool overwrite : {false, true}) {
      tandem::set_export_fault_hook_for_testing([stage](const std::string& s) {
        if (s == stage) tandem::throw_io("simulated failure at " + s);
      });
      const int64_t version = overwrite ? 1 : 0;
      Error e = error_of([&] { tandem::export_model(src, base, version, "savedmodel,onnx", overwrite); });
      tandem::set_export_fault_hook_for_testing({});
      CHECK(e.kind() == ErrorKind::Io);
      CHECK(std::string(e.what()) == "simulated failure at " + stage);
      CHECK(entries(base) == std::vector<std::string>{"1"});  // no temporary directory, no version 2
      CHECK(entries(base + "/1") == std::vector<std::string>{"model.json", "weights.tdw"});  // old version intact
      CHECK(file_bytes(base + "/1/weights.tdw") == old_weights);
    }
  }
}

TEST_CASE("export: a version taken by a concurrent export meanwhile", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const std::string src = write_source(tmp, m, weights_of(m));
  const std::string base = tmp / "serving/all";
  // Another writer creates the version between the check and the commit.
  tandem::set_export_fault_hook_for_testing([&](const std::string& s) {
    if (s == "before-commit" && !fs::exists(base + "/1")) fs::create_directories(base + "/1");
  });
  const std::string v = tandem::export_model(src, base, 0, "onnx", false);
  CHECK(v == base + "/2");  // the next free version instead
  fs::remove_all(base);
  Error e = error_of([&] { tandem::export_model(src, base, 1, "onnx", false); });  // an explicit version: refused
  tandem::set_export_fault_hook_for_testing({});
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK(entries(base) == std::vector<std::string>{"1"});
  CHECK(entries(base + "/1").empty());  // the other writer's version, untouched
}

TEST_CASE("export: bad input", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const std::string src = write_source(tmp, m, weights_of(m));
  const std::string base = tmp / "serving/all";

  CHECK(error_of([&] { tandem::export_model(src, base, 0, "coreml", false); }).kind() == ErrorKind::InvalidArgument);
  CHECK(error_of([&] { tandem::export_model(src, base, -3, "onnx", false); }).kind() == ErrorKind::InvalidArgument);
  CHECK(error_of([&] { tandem::export_model(src, "", 0, "onnx", false); }).kind() == ErrorKind::InvalidArgument);
  CHECK(error_of([&] { tandem::export_model(tmp / "missing/1", base, 0, "onnx", false); }).kind() == ErrorKind::Io);

  // A corrupt source: the read_model_version error, and nothing is created at the destination.
  const std::string bad_src = tmp / "bad/model/1";
  fs::create_directories(bad_src);
  fs::copy_file(src + "/model.json", bad_src + "/model.json");
  std::string w = file_bytes(src + "/weights.tdw");
  w[w.size() - 3] ^= 0x40;
  write_bytes(bad_src + "/weights.tdw", w);
  CHECK(error_of([&] { tandem::export_model(bad_src, base, 0, "savedmodel", false); }).kind() == ErrorKind::Data);
  CHECK(!fs::exists(base));

  // The destination is a file, or the version slot is a file.
  write_bytes(tmp / "file", "x");
  CHECK(error_of([&] { tandem::export_model(src, tmp / "file", 0, "onnx", false); }).kind() == ErrorKind::Io);
  fs::create_directories(base);
  write_bytes(base + "/3", "not a directory");
  CHECK(error_of([&] { tandem::export_model(src, base, 3, "onnx", true); }).kind() == ErrorKind::InvalidArgument);

  // describe_export: not a directory; a malformed file is a Data error naming it.
  CHECK(error_of([&] { tandem::describe_export(tmp / "file"); }).kind() == ErrorKind::Io);
  CHECK(error_of([&] { tandem::describe_export(tmp / "nothing"); }).kind() == ErrorKind::Io);
  const std::string v = tandem::export_model(src, base, 0, "savedmodel", false);
  write_bytes(v + "/saved_model.pb", "\x0a\xff\x01garbage");
  Error e = error_of([&] { tandem::describe_export(v); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("saved_model.pb") != std::string::npos);
  fs::create_directories(tmp / "empty");
  CHECK(tandem::describe_export(tmp / "empty")["formats"] == json::array());
}

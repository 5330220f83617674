// The TensorFlow.js layers-model export: the Keras topology and weights manifest per layer type,
// shards (a weight spanning two), `tandem export --format tfjs`, and describe_export on truncated and
// bit-flipped model.json and shards. (Agreement with tensorflowjs' loader:
// tests/interop/tflite_tfjs_check.py.)
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "engine/model.h"
#include "export/exporter.h"
#include "storage/raw_bytes.h"
#include "export/tfjs_writer.h"
#include "export_fixtures.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tandem::Error;
using tandem::ErrorKind;
using tandem::Model;
using namespace tandem::test;
namespace tfjs = tandem::tfjs;

namespace {

// Every weight's float32 bytes in the model's layer order: what the shards must hold.
std::string expected_weight_bytes(const Model& m, const std::vector<tandem::NamedTensor>& w) {
  std::string out;
  for (const auto& layer : m.layers())
    for (const auto& spec : layer->param_specs())
      out += tandem::float_bytes(tensor_named(w, layer->name() + "/" + spec.name).values);
  return out;
}

}  // namespace

TEST_CASE("tfjs: the topology and weights manifest for every layer type", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto w = weights_of(m);
  const tfjs::LayersModel lm = tfjs::build(m, w);
  const json& j = lm.model_json;
  CHECK(j["format"] == "layers-model");
  const json& top = j["modelTopology"]["model_config"];
  CHECK(top["class_name"] == "Sequential");
  CHECK(top["config"]["name"] == "all_layers");
  const json& layers = top["config"]["layers"];
  std::vector<std::string> classes, names;
  for (const json& l : layers) {
    classes.push_back(l["class_name"]);
    names.push_back(l["config"]["name"]);
    CHECK(l["config"]["dtype"] == "float32");  // a string: a Keras 3 DTypePolicy breaks tf_keras
  }
  CHECK(classes == std::vector<std::string>{"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
                                            "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense",
                                            "BatchNormalization", "Activation", "Activation", "Dense"});
  CHECK(names == std::vector<std::string>{"input", "c1", "bn1", "r1", "p1", "c2", "p2", "d1", "f", "h", "bn2", "a1",
                                          "lin", "out"});
  const json& in = layers[0]["config"];
  CHECK(in["batch_input_shape"] == json::array({nullptr, 28, 28, 1}));
  CHECK(!in.contains("batch_shape"));  // Keras 3's key: tfjs-layers and tf_keras reject it
  CHECK(layers[1]["config"]["kernel_size"] == json::array({3, 3}));
  CHECK(layers[1]["config"]["padding"] == "same");
  CHECK(layers[1]["config"]["activation"] == "relu");
  CHECK(layers[2]["config"]["axis"] == 3);  // channels of [batch, H, W, C]
  CHECK(layers[5]["config"]["strides"] == json::array({2, 2}));
  CHECK(layers[5]["config"]["use_bias"] == false);
  CHECK(layers[6]["config"]["pool_size"] == json::array({3, 3}));
  CHECK(layers[7]["config"]["rate"] == Approx(0.25));
  CHECK(layers[10]["config"]["axis"] == 1);  // a flat [batch, C]
  CHECK(layers[10]["config"]["epsilon"] == Approx(0.01));
  CHECK(layers[12]["config"]["activation"] == "linear");
  CHECK(layers[13]["config"]["units"] == 10);
  CHECK(layers[13]["config"]["activation"] == "softmax");

  // Manifest: one group, every weight of the model once, named as Keras names them, layer by layer.
  REQUIRE(j["weightsManifest"].size() == 1);
  const json& group = j["weightsManifest"][0];
  std::vector<std::string> weight_names;
  for (const json& e : group["weights"]) {
    weight_names.push_back(e["name"]);
    CHECK(e["dtype"] == "float32");
    CHECK(e["shape"] == tensor_named(w, e["name"]).shape.dims);
  }
  CHECK(weight_names == std::vector<std::string>{"c1/kernel", "c1/bias", "bn1/gamma", "bn1/beta", "bn1/moving_mean",
                                                 "bn1/moving_variance", "c2/kernel", "h/kernel", "bn2/gamma",
                                                 "bn2/beta", "bn2/moving_mean", "bn2/moving_variance", "out/kernel",
                                                 "out/bias"});
  REQUIRE(lm.shards.size() == 1);
  CHECK(group["paths"] == json::array({"group1-shard1of1.bin"}));
  CHECK(lm.shards[0].second == expected_weight_bytes(m, w));
}

TEST_CASE("tfjs: shards of a fixed size, a weight spanning two", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto w = weights_of(m);
  const std::string all = expected_weight_bytes(m, w);
  const tfjs::LayersModel lm = tfjs::build(m, w, 100);
  const size_t n = (all.size() + 99) / 100;
  REQUIRE(lm.shards.size() == n);
  std::string joined;
  json paths = json::array();
  for (size_t i = 0; i < n; ++i) {
    CHECK(lm.shards[i].first == "group1-shard" + std::to_string(i + 1) + "of" + std::to_string(n) + ".bin");
    CHECK(lm.shards[i].second.size() == (i + 1 < n ? 100 : all.size() - 100 * (n - 1)));
    joined += lm.shards[i].second;
    paths.push_back(lm.shards[i].first);
  }
  CHECK(joined == all);
  CHECK(lm.model_json["weightsManifest"][0]["paths"] == paths);
  // c1/kernel (36 floats = 144 bytes) already spans shards 1 and 2.
  CHECK(all.size() > 144);
}

TEST_CASE("tfjs: layer names", "[cpu][export]") {
  const Model named_input = Model::from_spec(json::parse(R"({"input_shape": [4], "layers": [
      {"type": "Dense", "name": "input", "units": 3, "activation": "softmax"}]})"),
                                             "test spec");
  const json layers =
      tfjs::build(named_input, weights_of(named_input)).model_json["modelTopology"]["model_config"]["config"]["layers"];
  CHECK(layers[0]["config"]["name"] == "input_1");  // the InputLayer steps aside
  CHECK(layers[0]["config"]["batch_input_shape"] == json::array({nullptr, 4}));
  CHECK(layers[1]["config"]["name"] == "input");
}

TEST_CASE("tfjs: tandem export writes tfjs/, reproducibly, and describe_export reads it", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const auto w = weights_of(m);
  const std::string src = write_source(tmp, m, w);
  const std::string v1 = tandem::export_model(src, tmp / "serving/all", 0, "tfjs", false);
  const std::string v2 = tandem::export_model(src, tmp / "serving/all", 0, "all", false);
  CHECK(entries_of(v1) == std::vector<std::string>{"model.json", "tfjs", "weights.tdw"});
  CHECK(entries_of(v1 + "/tfjs") == std::vector<std::string>{"group1-shard1of1.bin", "model.json"});
  for (const char* f : {"tfjs/model.json", "tfjs/group1-shard1of1.bin"})
    CHECK(read_bytes(v1 + "/" + f) == read_bytes(v2 + "/" + f));
  CHECK(read_bytes(v1 + "/tfjs/group1-shard1of1.bin") == expected_weight_bytes(m, w));
  tandem::read_model_version(v1);  // the native files still serve Tandem's tools

  const json d = tandem::describe_export(v2);
  CHECK(d["formats"] == json::array({"native", "savedmodel", "onnx", "tflite", "tfjs"}).get<json>());
  const json& t = d["tfjs"];
  CHECK(t["format"] == "layers-model");
  CHECK(t["class_name"] == "Sequential");
  CHECK(t["layers"].size() == 14);
  CHECK(t["layers"][1] == json{{"class_name", "Conv2D"}, {"name", "c1"}});
  CHECK(t["weights"].size() == 14);
  CHECK(t["shards"] ==
        json::array({{{"file", "group1-shard1of1.bin"}, {"bytes", expected_weight_bytes(m, w).size()}}}));
  CHECK(t["weight_bytes"] == expected_weight_bytes(m, w).size());

  // A missing or short shard, or a path out of the directory, is a Data error naming the file.
  const std::string shard = v1 + "/tfjs/group1-shard1of1.bin";
  std::string bytes = read_bytes(shard);
  write_bytes(shard, bytes.substr(0, bytes.size() - 4));
  Error e = catch_error([&] { tandem::describe_export(v1); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("group1-shard1of1.bin") != std::string::npos);
  CHECK(std::string(e.what()).find("need") != std::string::npos);
  fs::remove(shard);
  e = catch_error([&] { tandem::describe_export(v1); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("missing") != std::string::npos);
  json mj = json::parse(read_bytes(v1 + "/tfjs/model.json"));
  mj["weightsManifest"][0]["paths"][0] = "../model.json";
  write_bytes(v1 + "/tfjs/model.json", mj.dump());
  e = catch_error([&] { tandem::describe_export(v1); });
  CHECK(e.kind() == ErrorKind::Data);
  CHECK(std::string(e.what()).find("not a file name") != std::string::npos);
}

TEST_CASE("tfjs: truncated and bit-flipped files give a description or a Data error", "[cpu][export]") {
  TempDir tmp;
  const Model m = Model::from_spec(json::parse(R"({"input_shape": [4, 4, 1], "layers": [
      {"type": "Conv2D", "name": "c", "filters": 2, "kernel_size": 3, "padding": "same"},
      {"type": "BatchNormalization", "name": "bn"}, {"type": "Flatten", "name": "f"},
      {"type": "Dense", "name": "d", "units": 3, "activation": "softmax"}]})"),
                                   "test spec");
  const tfjs::LayersModel lm = tfjs::build(m, weights_of(m), 64);  // several shards
  const std::string dir = tmp / "tfjs";
  fs::create_directories(dir);
  for (const auto& [name, bytes] : tfjs::files(lm)) write_bytes(tmp / name, bytes);
  REQUIRE(tfjs::describe_tfjs(dir)["shards"].size() == lm.shards.size());
  std::map<std::string, std::string> original;
  for (const auto& [name, bytes] : tfjs::files(lm)) original[fs::path(name).filename().string()] = bytes;
  int parsed = 0, refused = 0;
  auto attempt = [&](const std::string& file, const std::string& bytes) {
    write_bytes(dir + "/" + file, bytes);
    try {
      const json d = tfjs::describe_tfjs(dir);
      CHECK_NOTHROW(d.dump());  // names read from the file are valid UTF-8 JSON
      ++parsed;
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Data);
      CHECK(std::string(e.what()).find(dir) != std::string::npos);  // names the file
      ++refused;
    }
    write_bytes(dir + "/" + file, original.at(file));  // restore it
  };
  const std::string model_json = tfjs::files(lm)[0].second;
  for (size_t len = 0; len < model_json.size(); ++len) attempt("model.json", model_json.substr(0, len));
  // Every prefix is invalid JSON but the one that only lacks the final newline.
  CHECK(refused == static_cast<int>(model_json.size()) - 1);
  std::mt19937 rng(23);
  for (int round = 0; round < 1500; ++round) {
    std::string b = model_json;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] ^= static_cast<char>(1u << (rng() % 8));
    attempt("model.json", b);
  }
  for (const auto& [name, bytes] : lm.shards) {
    for (size_t len = 0; len < bytes.size(); len += 7) attempt(name, bytes.substr(0, len));
    attempt(name, bytes + "x");
    std::string flipped = bytes;
    flipped[rng() % flipped.size()] ^= 0x10;
    attempt(name, flipped);  // contents are not checked: a valid description
  }
  CHECK(parsed > 0);
  CHECK(refused > static_cast<int>(model_json.size()));
}

// The seed corpus (tandem_fuzz_replay --make-seeds DIR): valid inputs of every target, written by
// the product's own writers from the tiny model, so that the fuzzers start past the magic numbers
// and checksums. tests/fuzz/corpus/ is this output, committed (a few KiB per target).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/idx.h"
#include "engine/model.h"
#include "storage/checkpoint.h"
#include "export/exporter.h"
#include "fuzz_target.h"
#ifdef TANDEM_HAVE_SERVE
#include "tensorflow_serving/apis/predict.pb.h"
#endif

namespace tandem::fuzz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put(const fs::path& dir, const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir / target);
  std::ofstream out(dir / target / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> row(int seed) {
  std::vector<float> r(kTinyRowElems);
  for (int i = 0; i < kTinyRowElems; ++i) r[i] = static_cast<float>((i * 7 + seed) % 11) / 10.0f;
  return r;
}

std::string request(const std::string& method, const std::string& path, const std::string& body,
                    const std::vector<std::string>& headers = {}) {
  std::string out = method + " " + path + "\n";
  for (const std::string& h : headers) out += h + "\n";
  return out + "\n" + body;
}

}  // namespace

void make_seeds(const fs::path& dir) {
  const fs::path work = scratch_dir() / "seeds";
  fs::remove_all(work);
  const std::string version = (work / "src" / "1").string();
  write_tiny_version(version, 7);

  // idx: images [2, 6, 6] and labels [2], plain and gzip.
  std::vector<uint8_t> pixels(2 * 36);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37);
  for (bool gz : {false, true}) {
    const std::string suffix = gz ? ".gz" : "";
    write_idx((work / ("images" + suffix)).string(), {2, 6, 6}, pixels, gz);
    write_idx((work / ("labels" + suffix)).string(), {2}, {3, 9}, gz);
    put(dir, "idx", "images" + suffix, read_all(work / ("images" + suffix)));
    put(dir, "idx", "labels" + suffix, read_all(work / ("labels" + suffix)));
  }

  // model_spec: the tiny model, the presets, and every layer type with its options.
  put(dir, "model_spec", "tiny.json", json::parse(kTinySpec).dump(1));
  put(dir, "model_spec", "mlp.json", Model::preset("mlp").dump(1));
  put(dir, "model_spec", "cnn.json", Model::preset("cnn").dump(1));
  put(dir, "model_spec", "all_layers.json", R"({"name": "all", "input_shape": [8, 8, 1], "layers": [
    {"type": "Conv2D", "name": "c1", "filters": 2, "kernel_size": [3, 2], "strides": 2, "padding": "same", "use_bias": false},
    {"type": "BatchNormalization", "epsilon": 0.01, "momentum": 0.9},
    {"type": "ReLU"}, {"type": "MaxPool2D", "pool_size": 3, "strides": 1, "padding": "valid"},
    {"type": "Dropout", "rate": 0.5}, {"type": "Flatten"},
    {"type": "Dense", "units": 4, "activation": "relu"}, {"type": "Activation", "activation": "linear"},
    {"type": "Dense", "units": 3, "activation": "softmax", "kernel_initializer": "glorot_uniform"}]})");

  // weights and model_version: the tiny version's files.
  const std::string model_json = read_all(fs::path(version) / "model.json");
  const std::string weights = read_all(fs::path(version) / "weights.tdw");
  put(dir, "weights", "tiny.tdw", weights);
  put(dir, "model_version", "tiny", join_files({{"model.json", model_json}, {"weights.tdw", weights}}));

  // checkpoint: two written by CheckpointWriter, `latest` naming the second.
  {
    const Model m = Model::from_spec(json::parse(kTinySpec), "tiny");
    TrainerState s;
    s.step = 5;
    s.epoch = 1;
    s.epoch_step = 2;
    s.params = m.initial_weights(3);
    s.slots = {std::vector<float>(s.params.size(), 0.125f)};
    EpochLog e;
    e.epoch = 1;
    e.loss = 1.5;
    e.accuracy = 0.25;
    e.steps = 3;
    e.samples = 96;
    e.learning_rate = 0.01;
    s.history = {e};
    const json identity{{"model", m.spec()}, {"batch_size", 32}, {"seed", 1}, {"optimizer", "sgd"}};
    CheckpointWriter writer((work / "ckpt").string(), 2);
    const fs::path first = writer.write(s, identity);
    s.step = 8;
    const fs::path second = writer.write(s, identity);
    std::map<std::string, std::string> files{{"latest", read_all(work / "ckpt" / "latest")}};
    for (const fs::path& c : {first, second}) {
      const std::string n = c.filename().string() == second.filename().string() ? "ckpt-2" : "ckpt-1";
      files[n + "/state.json"] = read_all(c / "state.json");
      files[n + "/tensors.tdw"] = read_all(c / "tensors.tdw");
    }
    files["latest"] = "ckpt-2\n";
    put(dir, "checkpoint", "two", join_files(files));
  }

  // The exports of the tiny version.
  const std::string exported = export_model(version, (work / "export").string(), 1, "all", false);
  put(dir, "saved_model", "tiny.pb", read_all(fs::path(exported) / kSavedModelFileName));
  put(dir, "onnx", "tiny.onnx", read_all(fs::path(exported) / kOnnxFileName));
#ifdef TANDEM_HAVE_TFLITE
  put(dir, "tflite", "tiny.tflite", read_all(fs::path(exported) / kTfliteFileName));
  {  // quantized: FLOAT16 constants with DEQUANTIZE; int8 tensors with QuantizationParameters
    tfl::QuantizeOptions half;
    half.mode = tfl::QuantizeMode::Float16;
    tfl::QuantizeOptions int8;
    int8.mode = tfl::QuantizeMode::Int8;
    int8.int8_io = true;
    for (int64_t i = 0; i < tfl::kMinCalibrationSamples * 36; ++i)
      int8.calibration.push_back(static_cast<float>(i % 251) / 250.f);
    const std::string f16 = export_model(version, (work / "export").string(), 2, "tflite", false, half);
    const std::string i8 = export_model(version, (work / "export").string(), 3, "tflite", false, int8);
    put(dir, "tflite", "tiny_float16.tflite", read_all(fs::path(f16) / kTfliteFileName));
    put(dir, "tflite", "tiny_int8_io.tflite", read_all(fs::path(i8) / kTfliteFileName));
  }
  {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(fs::path(exported) / "tfjs"))
      files[e.path().filename().string()] = read_all(e.path());
    put(dir, "tfjs", "tiny", join_files(files));
  }
#endif

#ifdef TANDEM_HAVE_SERVE
  // rest: every route, both body forms, the v2 JSON and binary forms.
  const std::vector<float> r1 = row(1), r2 = row(2);
  put(dir, "rest", "v1_instances", request("POST", "/v1/models/m:predict", json{{"instances", {tiny_image_json(r1)}}}.dump()));
  put(dir, "rest", "v1_inputs", request("POST", "/v1/models/m/versions/1:predict",
                                        json{{"signature_name", "serving_default"},
                                             {"inputs", {{"input", {tiny_image_json(r1), tiny_image_json(r2)}}}}}.dump()));
  put(dir, "rest", "v1_label", request("POST", "/v1/models/m/labels/stable:predict",
                                       json{{"instances", {{{"input", tiny_image_json(r2)}}}}}.dump()));
  put(dir, "rest", "v1_classify", request("POST", "/v1/models/m:classify", json{{"examples", json::array()}}.dump()));
  put(dir, "rest", "v1_status", request("GET", "/v1/models/m", ""));
  put(dir, "rest", "v1_metadata", request("GET", "/v1/models/m/versions/2/metadata", ""));
  json flat = json::array();
  for (float v : r1) flat.push_back(v);
  put(dir, "rest", "v2_json", request("POST", "/v2/models/m/infer",
                                      json{{"id", "1"},
                                           {"inputs", {{{"name", "input"}, {"shape", {1, 6, 6, 1}},
                                                        {"datatype", "FP32"}, {"data", flat}}}},
                                           {"outputs", {{{"name", "probabilities"}}}}}.dump()));
  {
    const std::string header = json{{"inputs", {{{"name", "input"}, {"shape", {1, 6, 6, 1}}, {"datatype", "FP32"},
                                                  {"parameters", {{"binary_data_size", 4 * kTinyRowElems}}}}}},
                                    {"outputs", {{{"name", "probabilities"}, {"parameters", {{"binary_data", true}}}}}}}
                                   .dump();
    std::string body = header;
    body.append(reinterpret_cast<const char*>(r2.data()), 4 * kTinyRowElems);
    put(dir, "rest", "v2_binary", request("POST", "/v2/models/m/versions/2/infer", body,
                                          {"Content-Type: application/octet-stream",
                                           "Inference-Header-Content-Length: " + std::to_string(header.size())}));
  }
  put(dir, "rest", "v2_meta", request("GET", "/v2/models/m", ""));
  put(dir, "rest", "v2_ready", request("GET", "/v2/health/ready", ""));
  put(dir, "rest", "metrics", request("GET", "/monitoring/prometheus/metrics", ""));

  // grpc_predict: float_val and tensor_content, a version and a label.
  {
    tensorflow::serving::PredictRequest req;
    req.mutable_model_spec()->set_name("m");
    req.mutable_model_spec()->set_signature_name("serving_default");
    tensorflow::TensorProto& t = (*req.mutable_inputs())["input"];
    t.set_dtype(tensorflow::DT_FLOAT);
    for (int64_t d : {1, 6, 6, 1}) t.mutable_tensor_shape()->add_dim()->set_size(d);
    for (float v : r1) t.add_float_val(v);
    put(dir, "grpc_predict", "float_val", req.SerializeAsString());
    t.clear_float_val();
    t.mutable_tensor_shape()->mutable_dim(0)->set_size(2);
    std::string content(reinterpret_cast<const char*>(r1.data()), 4 * kTinyRowElems);
    content.append(reinterpret_cast<const char*>(r2.data()), 4 * kTinyRowElems);
    t.set_tensor_content(content);
    req.mutable_model_spec()->mutable_version()->set_value(1);
    req.add_output_filter("probabilities");
    put(dir, "grpc_predict", "tensor_content", req.SerializeAsString());
    req.mutable_model_spec()->set_version_label("stable");
    put(dir, "grpc_predict", "label", req.SerializeAsString());
  }

  put(dir, "model_config", "two_models", R"(model_config_list {
  config {
    name: "fashion"
    base_path: "/models/fashion"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "mlp" base_path: "/models/mlp" model_version_policy { latest { num_versions: 2 } } }
  config { name: "all" base_path: "/models/all" model_version_policy { all {} } }
}
)");
  put(dir, "batching_params", "allowed_sizes", R"(max_batch_size { value: 64 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 8
allowed_batch_sizes: 32
allowed_batch_sizes: 64
pad_variable_length_inputs: true
)");
  put(dir, "batching_params", "defaults", "max_batch_size { value: 16 }\n");
  put(dir, "monitoring_config", "prometheus", "prometheus_config {\n  enable: true,\n  path: \"/metrics\"\n}\n");
#endif
  fs::remove_all(work);
}

}  // namespace tandem::fuzz

#include "export/tfjs_writer.h"

#include <sys/stat.h>

#include <cstdint>
#include <set>

#include "engine/errors.h"
#include "storage/atomic_file.h"
#include "export/exporter.h"
#include "storage/raw_bytes.h"

namespace tandem::tfjs {

using nlohmann::json;

namespace {

constexpr const char* kSupported =
    "supported: Dense, Conv2D, MaxPool2D, Flatten, Dropout, BatchNormalization, ReLU, Softmax, Activation";
// The Keras whose configuration style the topology follows (tf_keras 2.x; tfjs-layers reads it).
constexpr const char* kKerasVersion = "2.21.0";

json pair(const json& c, const char* key) { return json::array({c.at(key).at(0), c.at(key).at(1)}); }

// The Keras layer for a Tandem layer: {"class_name", "config"} with the configuration keys that
// differ from Keras's defaults or that loaders require.
json keras_layer(const Layer& layer) {
  const json c = layer.config();
  const std::string type = layer.type();
  const bool use_bias = layer_uses_bias(layer);
  json k{{"name", layer.name()}, {"trainable", true}, {"dtype", "float32"}};
  std::string cls = type;
  if (type == "Conv2D") {
    k["filters"] = c.at("filters");
    k["kernel_size"] = pair(c, "kernel_size");
    k["strides"] = pair(c, "strides");
    k["padding"] = c.at("padding");
    k["data_format"] = "channels_last";
    k["dilation_rate"] = {1, 1};
    k["activation"] = c.at("activation");
    k["use_bias"] = use_bias;
  } else if (type == "Dense") {
    k["units"] = c.at("units");
    k["activation"] = c.at("activation");
    k["use_bias"] = use_bias;
  } else if (type == "MaxPool2D") {
    cls = "MaxPooling2D";
    k["pool_size"] = pair(c, "pool_size");
    k["strides"] = pair(c, "strides");
    k["padding"] = c.at("padding");
    k["data_format"] = "channels_last";
  } else if (type == "Flatten") {
    k["data_format"] = "channels_last";  // NHWC order, as Tandem's Flatten and the Dense kernel rows
  } else if (type == "Dropout") {
    k["rate"] = c.at("rate");
  } else if (type == "BatchNormalization") {
    k["axis"] = static_cast<int64_t>(layer.input_shape().rank());  // the channel axis, counting the batch
    k["momentum"] = c.at("momentum");
    k["epsilon"] = c.at("epsilon");
    k["center"] = true;
    k["scale"] = true;
  } else if (type == "Softmax") {
    k["axis"] = -1;
  } else if (type == "Activation") {
    k["activation"] = c.at("activation");
  } else if (type != "ReLU") {
    throw_invalid("layer '" + layer.name() + "' of type " + type + " cannot be exported to TensorFlow.js", kSupported);
  }
  return json{{"class_name", cls}, {"config", k}};
}

}  // namespace

LayersModel build(const Model& model, const std::vector<NamedTensor>& tensors, size_t shard_bytes) {
  TANDEM_ASSERT(shard_bytes > 0);
  const ModelWeights weights(model, tensors);
  std::set<std::string> names;
  // Tandem's layer names ([A-Za-z0-9_.-]) are valid Keras names; only the InputLayer's may clash.
  for (const auto& layer : model.layers()) names.insert(layer->name());
  std::string input_name = "input";
  for (int i = 1; names.count(input_name); ++i) input_name = "input_" + std::to_string(i);

  json batch_shape = json::array({nullptr});
  for (int64_t d : model.input_shape().dims) batch_shape.push_back(d);
  json layers = json::array();
  layers.push_back({{"class_name", "InputLayer"},
                    {"config",
                     {{"batch_input_shape", batch_shape},
                      {"dtype", "float32"},
                      {"sparse", false},
                      {"ragged", false},
                      {"name", input_name}}}});
  json manifest_weights = json::array();
  std::string data;
  for (const auto& layer : model.layers()) {
    layers.push_back(keras_layer(*layer));
    for (const ParamSpec& spec : layer->param_specs()) {  // Keras's order: kernel, bias; gamma, beta, moving_*
      const NamedTensor& t = weights[layer->name() + "/" + spec.name];
      manifest_weights.push_back({{"name", t.name}, {"shape", t.shape.dims}, {"dtype", "float32"}});
      data += float_bytes(t.values);
    }
  }

  LayersModel out;
  const size_t n = (data.size() + shard_bytes - 1) / shard_bytes;
  json paths = json::array();
  for (size_t i = 0; i < n; ++i) {
    std::string name = "group1-shard" + std::to_string(i + 1) + "of" + std::to_string(n) + ".bin";
    paths.push_back(name);
    out.shards.emplace_back(std::move(name), data.substr(i * shard_bytes, shard_bytes));
  }
  out.model_json = {
      {"format", "layers-model"},
      {"generatedBy", std::string("Tandem ") + TANDEM_VERSION},
      {"convertedBy", nullptr},
      {"modelTopology",
       {{"keras_version", kKerasVersion},
        {"backend", "tensorflow"},
        {"model_config", {{"class_name", "Sequential"}, {"config", {{"name", model.name()}, {"layers", layers}}}}}}},
      {"weightsManifest", json::array({{{"paths", paths}, {"weights", manifest_weights}}})}};
  return out;
}

std::vector<std::pair<std::string, std::string>> files(const LayersModel& m) {
  const std::string dir = std::string(kDirName) + "/";
  std::vector<std::pair<std::string, std::string>> out{{dir + kModelFileName, m.model_json.dump() + "\n"}};
  for (const auto& [name, bytes] : m.shards) out.emplace_back(dir + name, bytes);
  return out;
}

namespace {

size_t dtype_bytes(const std::string& dtype) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "float16") return 2;
  if (dtype == "uint8" || dtype == "int8" || dtype == "bool") return 1;
  return 0;
}

}  // namespace

json describe_tfjs(const std::string& dir) {
  const std::string path = dir + "/" + kModelFileName;
  const std::string hint =
      "the directory is not a TensorFlow.js layers model written by Tandem; re-export with "
      "--format tfjs";
  auto bad = [&](const std::string& where, const std::string& what) { throw_data(where + ": " + what, hint); };
  // j[key], which must be a list (nlohmann would iterate a number or an object too).
  auto list = [&](const json& j, const char* key) -> const json& {
    const json& v = j.at(key);
    if (!v.is_array()) bad(path, std::string("\"") + key + "\" is not a list");
    return v;
  };
  json mj;
  try {
    mj = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    bad(path, std::string("not valid JSON (") + e.what() + ")");
  }
  json out{{"dir", kDirName}, {"layers", json::array()}, {"weights", json::array()}, {"shards", json::array()}};
  uint64_t weight_bytes = 0;
  try {
    if (!mj.is_object()) bad(path, "the top level is not a JSON object");
    out["format"] = mj.value("format", "");
    if (mj.contains("generatedBy") && mj["generatedBy"].is_string()) out["generated_by"] = mj["generatedBy"];
    if (!mj.contains("modelTopology") || !mj["modelTopology"].is_object()) bad(path, "no \"modelTopology\" object");
    const json* topology = &mj["modelTopology"];
    if (topology->contains("model_config")) topology = &topology->at("model_config");
    out["class_name"] = topology->at("class_name").get<std::string>();
    for (const json& l : list(topology->at("config"), "layers"))
      out["layers"].push_back(
          {{"class_name", l.at("class_name").get<std::string>()}, {"name", l.at("config").value("name", "")}});

    int group_number = 0;
    for (const json& group : list(mj, "weightsManifest")) {
      ++group_number;
      uint64_t need = 0, have = 0;
      for (const json& w : list(group, "weights")) {
        const std::string name = w.at("name").get<std::string>(), dtype = w.at("dtype").get<std::string>();
        const size_t elem = dtype_bytes(dtype);
        if (!elem) bad(path, "weight '" + name + "' has dtype '" + dtype + "'");
        uint64_t numel = 1;
        for (const json& d : list(w, "shape")) {
          if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t(1) << 31))
            bad(path, "weight '" + name + "' has shape " + w.at("shape").dump());
          const uint64_t dim = d.get<uint64_t>();
          if (dim && numel > (uint64_t(1) << 40) / dim) bad(path, "weight '" + name + "' is too large");
          numel *= dim;
        }
        out["weights"].push_back({{"name", name}, {"shape", w.at("shape")}, {"dtype", dtype}, {"bytes", numel * elem}});
        need += numel * elem;
      }
      std::string last = path;
      for (const json& p : list(group, "paths")) {
        const std::string file = p.get<std::string>();
        if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
          bad(path, "weight file '" + printable(file) + "' is not a file name in the directory");
        last = dir + "/" + file;
        struct stat st {};
        if (::stat(last.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
          bad(last, "missing (named by the weights manifest)");
        have += static_cast<uint64_t>(st.st_size);
        out["shards"].push_back({{"file", file}, {"bytes", static_cast<uint64_t>(st.st_size)}});
      }
      if (have != need)
        bad(last, "the shards of weight group " + std::to_string(group_number) + " hold " + std::to_string(have) +
                      " bytes, the manifest's weights need " + std::to_string(need));
      weight_bytes += need;
    }
  } catch (const json::exception& e) {
    bad(path, std::string("unexpected structure (") + e.what() + ")");
  }
  out["weight_bytes"] = weight_bytes;
  return out;
}

}  // namespace tandem::tfjs

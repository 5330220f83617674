#include "export/exporter.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <filesystem>

#include "engine/errors.h"
#include "engine/model.h"
#include "storage/atomic_file.h"
#include "storage/loaded_model.h"
#include "storage/model_dir.h"
#include "export/onnx_writer.h"
#include "storage/posix_file.h"
#include "export/savedmodel_writer.h"
#include "export/tfjs_writer.h"
#include "export/tflite_writer.h"

namespace tandem {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormatHint =
    "use --format savedmodel, onnx, tflite, tfjs or native, or several separated by commas (e.g. "
    "savedmodel,onnx), or all";
const std::vector<std::string> kFormats{"native", "savedmodel", "onnx", "tflite", "tfjs"};

std::function<void(const std::string&)>& fault_hook() {
  static std::function<void(const std::string&)> hook;
  return hook;
}

void fault_point(const char* stage) {
  if (fault_hook()) fault_hook()(stage);
}

constexpr const char* kOverwriteHint =
    "pass --overwrite to replace it, or omit --version to write the next free version";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

fs::path normalized_dir(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();  // "a/b/" -> "a/b"
  return p;
}

}  // namespace

bool layer_uses_bias(const Layer& layer) {
  const nlohmann::json c = layer.config();
  return !c.contains("use_bias") || c["use_bias"].get<bool>();
}

FoldedBatchNorm fold_batch_norm(const std::vector<float>& gamma, const std::vector<float>& beta,
                                const std::vector<float>& moving_mean, const std::vector<float>& moving_variance,
                                float epsilon) {
  TANDEM_ASSERT(beta.size() == gamma.size() && moving_mean.size() == gamma.size() &&
                moving_variance.size() == gamma.size());
  FoldedBatchNorm f;
  f.scale.resize(gamma.size());
  f.shift.resize(gamma.size());
  for (size_t c = 0; c < gamma.size(); ++c) {
    // The same float32 operations as the backends' batchnorm_forward_infer: bit-identical constants.
    f.scale[c] = gamma[c] / std::sqrt(moving_variance[c] + epsilon);
    f.shift[c] = beta[c] - moving_mean[c] * f.scale[c];
  }
  return f;
}

ModelWeights::ModelWeights(const Model& model, const std::vector<NamedTensor>& tensors) {
  model.from_tensors(tensors, "the weights of model '" + model.name() + "'");  // names and shapes
  for (const NamedTensor& t : tensors) by_name_[t.name] = &t;
}

const NamedTensor& ModelWeights::operator[](const std::string& name) const {
  auto it = by_name_.find(name);
  TANDEM_ASSERT(it != by_name_.end());  // the constructor checked every parameter
  return *it->second;
}

std::vector<float> transpose(const std::vector<float>& values, const std::vector<int64_t>& dims,
                             const std::vector<int>& perm) {
  const size_t rank = dims.size();
  TANDEM_ASSERT(perm.size() == rank);
  std::vector<int64_t> in_strides(rank, 1), out_dims(rank), index(rank, 0);
  for (size_t k = rank; k-- > 1;) in_strides[k - 1] = in_strides[k] * dims[k];
  int64_t total = 1;
  for (size_t k = 0; k < rank; ++k) {
    out_dims[k] = dims[static_cast<size_t>(perm[k])];
    total *= dims[k];
  }
  TANDEM_ASSERT(static_cast<size_t>(total) == values.size());
  std::vector<float> out(values.size());
  for (size_t n = 0; n < out.size(); ++n) {  // walk the output in order, `index` its coordinates
    int64_t from = 0;
    for (size_t k = 0; k < rank; ++k) from += index[k] * in_strides[static_cast<size_t>(perm[k])];
    out[n] = values[static_cast<size_t>(from)];
    for (size_t k = rank; k-- > 0;) {
      if (++index[k] < out_dims[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

void set_export_fault_hook_for_testing(std::function<void(const std::string& stage)> hook) {
  fault_hook() = std::move(hook);
}

std::vector<std::string> parse_export_formats(const std::string& format) {
  std::vector<bool> wanted(kFormats.size(), false);
  size_t start = 0;
  bool any = false;
  while (start <= format.size()) {
    size_t end = format.find(',', start);
    if (end == std::string::npos) end = format.size();
    std::string item = format.substr(start, end - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    std::transform(item.begin(), item.end(), item.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (item.empty()) {
      if (format.find_first_not_of(" \t,") == std::string::npos) throw_invalid("--format is empty", kFormatHint);
      throw_invalid("--format '" + format + "' has an empty entry", kFormatHint);
    }
    auto it = std::find(kFormats.begin(), kFormats.end(), item);
    if (item == "all")
      wanted.assign(kFormats.size(), true);
    else if (it == kFormats.end())
      throw_invalid("unknown export format '" + item + "'", kFormatHint);
    else
      wanted[static_cast<size_t>(it - kFormats.begin())] = true;
    any = true;
    start = end + 1;
  }
  if (!any) throw_invalid("--format is empty", kFormatHint);
  std::vector<std::string> out;
  for (size_t i = 0; i < kFormats.size(); ++i)
    if (wanted[i]) out.push_back(kFormats[i]);
  return out;
}

std::string export_model(const std::string& src_version_dir, const std::string& dest_model_dir, int64_t version,
                         const std::string& format, bool overwrite, const tfl::QuantizeOptions& tflite) {
  const std::vector<std::string> formats = parse_export_formats(format);
  auto has = [&](const char* f) { return std::find(formats.begin(), formats.end(), f) != formats.end(); };
  if (tflite.mode != tfl::QuantizeMode::None && !has("tflite"))
    throw_invalid(std::string("--quantize ") + tfl::quantize_mode_name(tflite.mode) +
                      " applies to the TensorFlow Lite export only, and --format has no tflite",
                  "add tflite to --format (e.g. --format tflite), or drop --quantize");
  if (version < 0)
    throw_invalid("version must be a positive integer, got " + std::to_string(version),
                  "omit --version to write the next free version");
  if (dest_model_dir.empty())
    throw_invalid("no destination given", "pass --to BASE/NAME, e.g. --to serving/fashion_mnist");

  // Read and check the source completely, and build every file in memory, before touching the
  // destination: a bad source or a model that cannot be converted leaves nothing behind.
  const fs::path src(src_version_dir);
  const LoadedModel loaded = load_model(src_version_dir);  // every parameter present with its shape
  const ModelVersion& mv = loaded.version;
  const Model& model = loaded.model;
  const std::string json_path = (src / kModelJsonName).string();

  std::vector<std::pair<std::string, std::string>> files;
  files.emplace_back(kModelJsonName, read_text_file(json_path));  // byte copies: same digest
  files.emplace_back(kWeightsFileName, read_text_file((src / kWeightsFileName).string()));
  if (has("savedmodel"))
    files.emplace_back(kSavedModelFileName, savedmodel::encode_saved_model(savedmodel::build_graph(model, mv.tensors)));
  if (has("onnx")) files.emplace_back(kOnnxFileName, onnx::encode_model(onnx::build_graph(model, mv.tensors)));
  if (has("tflite"))
    files.emplace_back(kTfliteFileName, tfl::encode_model(tfl::quantize(tfl::build_graph(model, mv.tensors), tflite)));
  if (has("tfjs"))
    for (auto& f : tfjs::files(tfjs::build(model, mv.tensors))) files.push_back(std::move(f));

  // The destination: BASE/NAME/<version>.
  const fs::path parent = normalized_dir(dest_model_dir);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec || !fs::is_directory(parent, ec))
    throw_io("cannot create model directory '" + parent.string() + "'" + (ec ? ": " + ec.message() : ""),
             "--to must name a directory you may write to, e.g. --to serving/fashion_mnist");
  const bool next_free = version == 0;
  if (next_free) version = next_version(parent.string());
  fs::path target = parent / std::to_string(version);
  if (path_exists(target)) {
    if (!overwrite) throw_invalid("model version " + target.string() + " already exists", kOverwriteHint);
    if (!fs::is_directory(target, ec))
      throw_invalid("'" + target.string() + "' exists and is not a directory", "remove it or choose another --version");
  }

  const fs::path tmp = make_temp_directory(parent, ".tmp-export-" + std::to_string(version));
  try {
    std::vector<fs::path> subdirs;  // tfjs/
    for (const auto& [name, bytes] : files) {
      const fs::path dir = (tmp / name).parent_path();
      if (dir != tmp && std::find(subdirs.begin(), subdirs.end(), dir) == subdirs.end()) {
        if (!fs::create_directory(dir, ec) || ec)
          throw_io("cannot create directory '" + dir.string() + "'" + (ec ? ": " + ec.message() : ""));
        subdirs.push_back(dir);
      }
      write_new_file_synced(tmp / name, bytes);
    }
    fault_point("files-written");
    for (const fs::path& d : subdirs) fsync_directory(d);
    fsync_directory(tmp);
    fault_point("before-commit");
    auto commit = [&] {
      return commit_directory(tmp, target, parent, ".tmp-export-" + target.filename().string(), overwrite);
    };
    for (int attempt = 0; !commit(); ++attempt) {
      // Another export took this version meanwhile: take the next free one, or refuse.
      if (!next_free || attempt >= 16)
        throw_invalid("model version " + target.string() + " already exists", kOverwriteHint);
      version = next_version(parent.string());
      target = parent / std::to_string(version);
    }
    fsync_directory(parent);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);  // a no-op once committed
    throw;
  }
  return target.string();
}

json describe_export(const std::string& version_dir) {
  struct stat st {};
  if (::stat(version_dir.c_str(), &st) != 0) {
    const int err = errno;
    throw_io("cannot open model version directory '" + version_dir + "': " + errno_text(err),
             "a model version directory looks like BASE/NAME/1");
  }
  if (!S_ISDIR(st.st_mode))
    throw_io("'" + version_dir + "' is not a directory", "a model version directory looks like BASE/NAME/1");
  const fs::path dir(version_dir);
  json out{{"version_dir", version_dir}, {"formats", json::array()}};

  const fs::path json_path = dir / kModelJsonName, weights_path = dir / kWeightsFileName;
  if (is_file(json_path) && is_file(weights_path)) {
    json native{{"files", {kModelJsonName, kWeightsFileName}}};
    json mj;
    try {
      mj = json::parse(read_text_file(json_path.string()));
    } catch (const json::exception& e) {
      throw_data("cannot parse " + json_path.string() + ": " + e.what(),
                 "model.json must be the JSON written by Tandem; re-export the model");
    }
    if (mj.is_object())
      for (const char* key : {"name", "input_shape", "class_names"})
        if (mj.contains(key)) native[key] = mj[key];
    out["formats"].push_back("native");
    out["native"] = native;
  }
  const fs::path pb = dir / kSavedModelFileName;
  if (is_file(pb)) {
    out["formats"].push_back("savedmodel");
    out["savedmodel"] = savedmodel::describe_saved_model(read_text_file(pb.string()), pb.string());
    std::error_code ec;
    out["savedmodel"]["variables"] = fs::is_directory(dir / "variables", ec);
  }
  const fs::path onnx_path = dir / kOnnxFileName;
  if (is_file(onnx_path)) {
    out["formats"].push_back("onnx");
    out["onnx"] = onnx::describe_onnx(read_text_file(onnx_path.string()), onnx_path.string());
  }
  const fs::path tflite_path = dir / kTfliteFileName;
  if (is_file(tflite_path)) {
    out["formats"].push_back("tflite");
    const std::string bytes = read_text_file(tflite_path.string());
    if (tfl::available()) {
      out["tflite"] = tfl::describe_tflite(bytes, tflite_path.string());
    } else {
      out["tflite"] = {{"file", kTfliteFileName},
                       {"bytes", bytes.size()},
                       {"note", "not read: this tandem was built without flatbuffers"}};
    }
  }
  const fs::path tfjs_dir = dir / tfjs::kDirName;
  if (is_file(tfjs_dir / tfjs::kModelFileName)) {
    out["formats"].push_back("tfjs");
    out["tfjs"] = tfjs::describe_tfjs(tfjs_dir.string());
  }
  return out;
}

}  // namespace tandem

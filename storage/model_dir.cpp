// Versioned model directories <base>/<name>/<version>/ (model.json + weights.tdw), written atomically.
//
// A version is written into a hidden temporary sibling ".tmp-<version>-<pid>-<random>" (not numeric,
// so TensorFlow Serving and list_versions ignore it), fsynced, and renamed into place. Overwriting
// renames the old version aside (".tmp-<version>-old-<pid>-<random>"), renames the new one in and
// then deletes the old one. Version names are canonical positive decimal integers: "1", "42", but not
// "0", "01", "+1" or "1a" — so two directories never denote the same version.
#include "storage/model_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <limits>

#include "engine/errors.h"
#include "storage/posix_file.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

constexpr const char* kVersionDirHint = "a model version directory looks like BASE/NAME/1";
constexpr const char* kInconsistentHint =
    "model.json and weights.tdw do not belong together; re-export the model or restore it from a backup";

std::string read_text_file(const fs::path& path, const char* hint) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    throw_io("cannot open '" + path.string() + "': " + errno_text(err), hint);
  }
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw_io("cannot read '" + path.string() + "': " + errno_text(err), hint);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

// Canonical positive decimal: digits only, no leading zero, fits int64.
bool parse_version_name(const std::string& name, int64_t* version) {
  if (name.empty() || name.size() > 19 || name[0] == '0') return false;
  uint64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');  // <= 19 digits: cannot overflow uint64
  }
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *version = static_cast<int64_t>(v);
  return true;
}

struct DeclaredTensor {
  std::string name;
  Shape shape;
};

// Checks "format" and "format_version" and returns the "weights" list of a model.json document.
// `where` names the document in messages; `kind` is Data when reading and InvalidArgument when writing.
std::vector<DeclaredTensor> check_model_json(const nlohmann::json& j, const std::string& where, ErrorKind kind,
                                             const std::string& hint) {
  if (!j.is_object()) throw_error(kind, where + ": expected a JSON object at the top level", hint);
  const auto format = j.find("format");
  if (format == j.end() || !format->is_string() || format->get<std::string>() != "tandem-model")
    throw_error(kind,
                where + ": \"format\" is " + (format == j.end() ? std::string("missing") : format->dump()) +
                    ", expected \"tandem-model\"",
                hint);
  const auto version = j.find("format_version");
  if (version == j.end() || !version->is_number_integer())
    throw_error(kind, where + ": \"format_version\" is missing or not an integer", hint);
  if (*version != 1)
    throw_error(kind, where + ": unknown format version " + version->dump() + "; this build reads version 1",
                kind == ErrorKind::Data ? "upgrade Tandem to read models written by a newer version" : hint);
  const auto weights = j.find("weights");
  if (weights == j.end() || !weights->is_array())
    throw_error(kind, where + ": \"weights\" is missing or not an array", hint);

  std::vector<DeclaredTensor> declared;
  for (size_t i = 0; i < weights->size(); ++i) {
    const nlohmann::json& w = (*weights)[i];
    const std::string bad = where + ": weights[" + std::to_string(i) + "] must be an object with a string \"name\" " +
                            "and a \"shape\" array of non-negative integers";
    if (!w.is_object()) throw_error(kind, bad, hint);
    const auto name = w.find("name");
    const auto shape = w.find("shape");
    if (name == w.end() || !name->is_string() || shape == w.end() || !shape->is_array()) throw_error(kind, bad, hint);
    DeclaredTensor t;
    t.name = name->get<std::string>();
    for (const nlohmann::json& d : *shape) {
      // Parsed non-negative numbers are unsigned; numbers set from C++ ints are signed.
      const bool ok = d.is_number_unsigned()
                          ? d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                          : d.is_number_integer() && d.get<int64_t>() >= 0;
      if (!ok) throw_error(kind, bad + " (tensor '" + t.name + "' has shape " + shape->dump() + ")", hint);
      t.shape.dims.push_back(d.get<int64_t>());
    }
    declared.push_back(std::move(t));
  }
  return declared;
}

// model.json's "weights" must list exactly the tensors of the weights file: same names, order and shapes.
void check_weights_match(const std::vector<DeclaredTensor>& declared, const std::vector<NamedTensor>& tensors,
                         const std::string& json_where, const std::string& weights_where, ErrorKind kind,
                         const std::string& hint) {
  const size_t common = std::min(declared.size(), tensors.size());
  for (size_t i = 0; i < common; ++i) {
    if (declared[i].name != tensors[i].name)
      throw_error(kind,
                  json_where + " lists tensor '" + declared[i].name + "' at position " + std::to_string(i) + " but " +
                      weights_where + " has tensor '" + tensors[i].name + "' there",
                  hint);
    if (declared[i].shape != tensors[i].shape)
      throw_error(kind,
                  "tensor '" + declared[i].name + "': " + json_where + " declares shape " + declared[i].shape.str() +
                      " but " + weights_where + " holds shape " + tensors[i].shape.str(),
                  hint);
  }
  if (declared.size() > common)
    throw_error(kind,
                "tensor '" + declared[common].name + "' listed in " + json_where + " is missing from " + weights_where,
                hint);
  if (tensors.size() > common)
    throw_error(kind, "tensor '" + tensors[common].name + "' in " + weights_where + " is not listed in " + json_where,
                hint);
}

}  // namespace

void write_model_version(const std::string& version_dir, const ModelVersion& version, bool overwrite) {
  fs::path target = fs::path(version_dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "base/name/1/" -> "base/name/1"
  const std::string base = target.filename().string();
  if (version_dir.empty() || base.empty() || base == "." || base == "..")
    throw_invalid("'" + version_dir + "' does not name a model version directory", kVersionDirHint);
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";

  // Reject an inconsistent model before touching the disk.
  const std::string json_where = "model.json for " + target.string();
  const std::string caller_hint = "this is a bug in the code building the model: model.json must describe its weights";
  check_weights_match(check_model_json(version.model_json, json_where, ErrorKind::InvalidArgument, caller_hint),
                      version.tensors, json_where, "the weights", ErrorKind::InvalidArgument, caller_hint);
  std::string json_text;
  try {
    json_text = version.model_json.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    throw_invalid(json_where + " cannot be serialized: " + e.what(), "strings in model.json must be valid UTF-8");
  }

  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec)
    throw_io("cannot create directory '" + parent.string() + "': " + ec.message(),
             "check that no path component is a file and that you may write there");
  if (path_exists(target)) {
    if (!overwrite)
      throw_invalid("model version " + target.string() + " already exists", "--overwrite or choose another --version");
    if (!fs::is_directory(target, ec))
      throw_invalid("'" + target.string() + "' exists and is not a directory", "remove it or choose another --version");
  }

  const fs::path tmp = make_temp_directory(parent, ".tmp-" + base);
  try {
    write_new_file_synced(tmp / kModelJsonName, json_text);
    write_weights_file((tmp / kWeightsFileName).string(), version.tensors);
    fsync_directory(tmp);
    if (!commit_directory(tmp, target, parent, ".tmp-" + base, overwrite))
      throw_invalid("model version " + target.string() + " already exists", "--overwrite or choose another --version");
    fsync_directory(parent);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);  // no-op once committed
    throw;
  }
}

ModelVersion read_model_version(const std::string& version_dir) {
  struct stat st {};
  if (::stat(version_dir.c_str(), &st) != 0) {
    const int err = errno;
    throw_io("cannot open model version directory '" + version_dir + "': " + errno_text(err), kVersionDirHint);
  }
  if (!S_ISDIR(st.st_mode)) throw_io("'" + version_dir + "' is not a directory", kVersionDirHint);

  const fs::path dir(version_dir);
  const std::string json_path = (dir / kModelJsonName).string();
  const std::string weights_path = (dir / kWeightsFileName).string();
  ModelVersion mv;
  const std::string text = read_text_file(json_path, kVersionDirHint);
  try {
    mv.model_json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_data("cannot parse " + json_path + ": " + e.what(),
               "model.json must be the JSON written by Tandem's export; re-export the model");
  }
  const std::vector<DeclaredTensor> declared = check_model_json(
      mv.model_json, json_path, ErrorKind::Data, "model.json must be the file written by Tandem's export");
  mv.tensors = read_weights_file(weights_path);
  check_weights_match(declared, mv.tensors, json_path, weights_path, ErrorKind::Data, kInconsistentHint);
  return mv;
}

std::vector<int64_t> list_versions(const std::string& model_dir) {
  struct stat st {};
  if (::stat(model_dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return {};
    throw_io("cannot open model directory '" + model_dir + "': " + errno_text(err), "check the path and permissions");
  }
  if (!S_ISDIR(st.st_mode))
    throw_io("model directory '" + model_dir + "' is not a directory", "a model directory looks like BASE/NAME");

  std::vector<int64_t> versions;
  std::error_code ec;
  fs::directory_iterator it(model_dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    int64_t v = 0;
    std::error_code type_ec;
    if (parse_version_name(it->path().filename().string(), &v) && it->is_directory(type_ec)) versions.push_back(v);
  }
  if (ec)
    throw_io("cannot list model directory '" + model_dir + "': " + ec.message(), "check the directory's permissions");
  std::sort(versions.begin(), versions.end());
  return versions;
}

int64_t next_version(const std::string& model_dir) {
  const std::vector<int64_t> versions = list_versions(model_dir);
  if (versions.empty()) return 1;
  if (versions.back() == std::numeric_limits<int64_t>::max())
    throw_invalid("model directory '" + model_dir + "' already has the largest possible version",
                  "choose a --version explicitly");
  return versions.back() + 1;
}

}  // namespace tandem

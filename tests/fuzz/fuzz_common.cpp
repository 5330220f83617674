#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <typeinfo>

#include "engine/errors.h"
#include "storage/loaded_model.h"
#include "storage/model_dir.h"
#include "storage/weights_file.h"
#include "fuzz_target.h"

namespace tandem::fuzz {

namespace fs = std::filesystem;

std::map<std::string, TargetFn>& registry() {
  static std::map<std::string, TargetFn> targets;
  return targets;
}

[[noreturn]] static void crash(const char* target, const std::string& what) {
  std::fprintf(stderr, "\n==fuzz== %s: %s\n", target, what.c_str());
  std::fflush(stderr);
  std::abort();
}

bool verbose() {
  static const bool on = std::getenv("TANDEM_FUZZ_VERBOSE") != nullptr;
  return on;
}

void expect_clean(const char* target, const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Internal)
      crash(target, std::string("internal error (a bug): ") + e.what() + " [hint: " + e.hint() + "]");
    if (std::string_view(e.what()).empty()) crash(target, "an error with an empty message");
    if (verbose()) std::fprintf(stderr, "  rejected: %s\n", e.what());
    return;
  } catch (const std::exception& e) {
    crash(target, std::string("an exception that is not tandem::Error escaped: ") + typeid(e).name() + ": " +
                      e.what());
  } catch (...) {
    crash(target, "an exception of unknown type escaped");
  }
  if (verbose()) std::fprintf(stderr, "  accepted\n");
}

static constexpr std::string_view kMarker = "\n@@file ";

static bool safe_name(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.find("..") != std::string_view::npos) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '/')) return false;
  return true;
}

std::map<std::string, std::string> split_files(std::string_view data, const std::vector<std::string>& allowed) {
  std::map<std::string, std::string> files;
  size_t at = data.find(kMarker);
  while (at != std::string_view::npos) {
    const size_t name_begin = at + kMarker.size();
    const size_t name_end = data.find('\n', name_begin);
    if (name_end == std::string_view::npos) break;
    const std::string_view name = data.substr(name_begin, name_end - name_begin);
    const size_t next = data.find(kMarker, name_end);
    const std::string_view content =
        data.substr(name_end + 1, next == std::string_view::npos ? std::string_view::npos : next - name_end - 1);
    if (safe_name(name))
      for (const std::string& a : allowed)
        if (a == name) files[std::string(name)] = std::string(content);
    at = next;
  }
  return files;
}

std::string join_files(const std::map<std::string, std::string>& files) {
  std::string out;
  for (const auto& [name, content] : files) {
    out += kMarker;
    out += name;
    out += '\n';
    out += content;
  }
  return out;
}

namespace {
struct Scratch {
  fs::path path;
  Scratch() {
    std::random_device rd;
    const char* tmp = std::getenv("TMPDIR");
    path = fs::path(tmp && *tmp ? tmp : "/tmp") /
           ("tandem-fuzz-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

const fs::path& scratch_dir() {
  static Scratch scratch;
  return scratch.path;
}

static void write_file(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) crash("scratch", "cannot write " + path.string());
}

std::string write_bundle(const std::map<std::string, std::string>& files) {
  const fs::path dir = scratch_dir() / "bundle";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& [name, content] : files) {
    const fs::path p = dir / name;
    fs::create_directories(p.parent_path());
    write_file(p, content);
  }
  return dir.string();
}

std::string scratch_file(const std::string& name, std::string_view content) {
  const fs::path dir = scratch_dir() / "files";
  fs::create_directories(dir);
  const fs::path p = dir / name;
  write_file(p, content);
  return p.string();
}

namespace {
template <typename T>
bool load_le(const std::string& b, size_t at, T& v) {
  if (at > b.size() || b.size() - at < sizeof(T)) return false;
  std::memcpy(&v, b.data() + at, sizeof(T));  // the file format is little-endian, as this host
  return true;
}
template <typename T>
void store_le(std::string& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}
}  // namespace

std::string with_weights_crcs(std::string b) {
  // Layout (storage/weights_file.cpp): magic[8] version u32, count u32, table_bytes u64, the table,
  // then u32 crc32c of everything before it. Entry: u16 name_len, name, u8 dtype, u8 rank,
  // u64 dims[rank], u64 offset, u64 byte_size, u32 data crc32c.
  uint32_t count = 0;
  uint64_t table_bytes = 0;
  if (!load_le(b, 12, count) || !load_le(b, 16, table_bytes)) return b;
  if (table_bytes > b.size() || b.size() - 24 < table_bytes + 4 || b.size() < 28) return b;
  const size_t table_end = 24 + static_cast<size_t>(table_bytes);
  size_t at = 24;
  for (uint32_t i = 0; i < count && i < 4096; ++i) {
    uint16_t name_len = 0;
    uint8_t rank = 0;
    if (!load_le(b, at, name_len)) break;
    at += 2 + name_len + 1;
    if (!load_le(b, at, rank)) break;
    at += 1 + size_t{8} * rank;
    uint64_t offset = 0, bytes = 0;
    if (!load_le(b, at, offset) || !load_le(b, at + 8, bytes) || at + 20 > table_end) break;
    if (offset <= b.size() && bytes <= b.size() - offset)
      store_le(b, at + 16, crc32c(b.data() + offset, static_cast<size_t>(bytes)));
    at += 20;
  }
  store_le(b, table_end, crc32c(b.data(), table_end));
  return b;
}

const char* const kTinySpec = R"({"name": "tiny", "input_shape": [6, 6, 1], "layers": [
  {"type": "Conv2D", "filters": 2, "kernel_size": 3, "padding": "same", "activation": "relu"},
  {"type": "BatchNormalization"},
  {"type": "MaxPool2D", "pool_size": 2},
  {"type": "Flatten"},
  {"type": "Dropout", "rate": 0.25},
  {"type": "Dense", "units": 3, "activation": "softmax"}]})";

void write_tiny_version(const std::string& dir, uint64_t seed) {
  const Model m = Model::from_spec(nlohmann::json::parse(kTinySpec), "the fuzz targets' tiny model");
  ModelVersion v;
  v.tensors = m.to_tensors(m.initial_weights(seed));
  v.model_json = model_json(m, {"a", "b", "c"}, nlohmann::json{{"seed", seed}});
  write_model_version(dir, v, /*overwrite=*/true);
}

nlohmann::json tiny_image_json(const std::vector<float>& row) {
  nlohmann::json image = nlohmann::json::array();
  for (int y = 0; y < 6; ++y) {
    nlohmann::json line = nlohmann::json::array();
    for (int x = 0; x < 6; ++x) line.push_back(nlohmann::json::array({row[y * 6 + x]}));
    image.push_back(line);
  }
  return image;
}

}  // namespace tandem::fuzz

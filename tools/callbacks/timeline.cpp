#include "tools/callbacks/timeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/errors.h"
#include "engine/trace.h"
#include "storage/atomic_file.h"
#include "tools/callbacks/host_name.h"

namespace tandem {

namespace {

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// This rank's events as Trace Event Format objects, comma-separated, times from `origin_us`.
std::string events_json(const trace::Recording& rec, int rank, int64_t offset_us, int64_t origin_us) {
  using nlohmann::json;
  std::string out;
  out.reserve(rec.events.size() * 96 + 256);
  auto add = [&out](const std::string& item) {
    if (!out.empty()) out += ",\n";
    out += item;
  };
  add(json{{"name", "process_name"}, {"ph", "M"}, {"pid", rank},
           {"args", {{"name", "rank " + std::to_string(rank) + " (" + host_name() + ")"}}}}.dump());
  add(json{{"name", "process_sort_index"}, {"ph", "M"}, {"pid", rank}, {"args", {{"sort_index", rank}}}}.dump());
  for (const auto& [tid, name] : rec.threads)
    add(json{{"name", "thread_name"}, {"ph", "M"}, {"pid", rank}, {"tid", tid}, {"args", {{"name", name}}}}.dump());
  char buf[256];
  for (const trace::Event& e : rec.events) {
    const long long ts = static_cast<long long>(e.begin_us + offset_us - origin_us);
    const long long dur = static_cast<long long>(std::max<int64_t>(0, e.end_us - e.begin_us));
    int n = std::snprintf(buf, sizeof(buf), "{\"name\":\"%s\",\"cat\":\"train\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,"
                          "\"ts\":%lld,\"dur\":%lld", e.name, rank, e.tid, ts, dur);
    if (e.arg >= 0 && n > 0 && n < static_cast<int>(sizeof(buf)))
      n += std::snprintf(buf + n, sizeof(buf) - static_cast<size_t>(n), ",\"args\":{\"%s\":%lld}",
                         std::strcmp(e.name, "allreduce bucket") == 0 ? "bucket" : "step",
                         static_cast<long long>(e.arg));
    if (n > 0 && n < static_cast<int>(sizeof(buf)) - 1) {
      out += out.empty() ? "" : ",\n";
      out.append(buf, static_cast<size_t>(n));
      out += '}';
    }
  }
  return out;
}

}  // namespace

Timeline::Timeline(std::string path, Communicator* comm, bool chief) : path_(std::move(path)), comm_(comm), chief_(chief) {}

Timeline::~Timeline() {
  if (trace::enabled()) trace::stop();  // training ended by an error: nothing is written
}

void Timeline::on_train_begin() {
  if (chief_) {
    namespace fs = std::filesystem;
    const fs::path p(path_);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::error_code ec;
    if (fs::is_directory(p, ec)) throw_io("--timeline: '" + path_ + "' is a directory", "give a FILE.json to write");
    if (!fs::is_directory(dir, ec) || ::access(dir.c_str(), W_OK) != 0)
      throw_io("--timeline: cannot write in '" + dir.string() + "'", "give a FILE.json in a writable directory");
  }
  wall_minus_steady_us_ = wall_us() - trace::now_us();
  trace::name_thread("training");
  trace::start();
}

void Timeline::on_train_end() {
  const trace::Recording rec = trace::stop();
  const int rank = comm_ ? comm_->rank() : 0;
  const int size = comm_ ? comm_->size() : 1;
  // Times count from the earliest event of any rank.
  int64_t first = std::numeric_limits<int64_t>::max();
  for (const auto& e : rec.events) first = std::min(first, e.begin_us + wall_minus_steady_us_);
  std::vector<int64_t> firsts(static_cast<size_t>(size), first);
  if (comm_) comm_->all_gather(&first, sizeof first, firsts.data());
  const int64_t origin = *std::min_element(firsts.begin(), firsts.end());
  const std::string mine = events_json(rec, rank, wall_minus_steady_us_, origin == std::numeric_limits<int64_t>::max() ? 0 : origin);

  std::vector<std::string> parts{mine};
  if (comm_) {
    // Sizes first, then every rank's text padded to the longest.
    const uint64_t length = mine.size();
    std::vector<uint64_t> lengths(static_cast<size_t>(size));
    comm_->all_gather(&length, sizeof length, lengths.data());
    const uint64_t longest = *std::max_element(lengths.begin(), lengths.end());
    std::string padded = mine;
    padded.resize(longest, ' ');
    std::vector<char> all(static_cast<size_t>(longest) * static_cast<size_t>(size));
    comm_->all_gather(padded.data(), longest, all.data());
    parts.clear();
    for (int r = 0; r < size; ++r)
      parts.emplace_back(all.data() + static_cast<size_t>(r) * longest, lengths[static_cast<size_t>(r)]);
  }
  if (!chief_) return;
  std::string text = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"tandem_version\":\"" TANDEM_VERSION
                     "\",\"ranks\":" + std::to_string(size) + "},\n\"traceEvents\":[\n";
  for (size_t r = 0; r < parts.size(); ++r) text += (r ? ",\n" : "") + parts[r];
  text += "\n]}\n";
  write_file_atomic(path_, text);
}

}  // namespace tandem

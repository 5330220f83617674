#include "storage/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <utility>

#include "engine/errors.h"
#include "storage/atomic_file.h"
#include "storage/posix_file.h"
#include "storage/weights_file.h"

namespace tandem {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPrefix = "ckpt-";

json log_to_json(const EpochLog& l) {
  return json{{"epoch", l.epoch},
              {"loss", l.loss},
              {"accuracy", l.accuracy},
              {"val_loss", l.val_loss},
              {"val_accuracy", l.val_accuracy},
              {"has_val", l.has_val},
              {"seconds", l.seconds},
              {"steps", l.steps},
              {"samples", l.samples},
              {"learning_rate", l.learning_rate}};
}

EpochLog log_from_json(const json& j) {
  EpochLog l;
  l.epoch = j.at("epoch").get<int>();
  l.loss = j.at("loss").get<double>();
  l.accuracy = j.at("accuracy").get<double>();
  l.val_loss = j.at("val_loss").get<double>();
  l.val_accuracy = j.at("val_accuracy").get<double>();
  l.has_val = j.at("has_val").get<bool>();
  l.seconds = j.at("seconds").get<double>();
  l.steps = j.at("steps").get<int64_t>();
  l.samples = j.at("samples").get<int64_t>();
  l.learning_rate = j.at("learning_rate").get<double>();
  return l;
}

// Test hook: TANDEM_TEST_CHECKPOINT_DELAY_MS widens the window in which a kill lands mid-write.
void test_delay() {
  if (const char* v = std::getenv("TANDEM_TEST_CHECKPOINT_DELAY_MS"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(v)));
}

}  // namespace

CheckpointWriter::CheckpointWriter(std::string root, int keep) : root_(std::move(root)), keep_(keep) {
  if (keep_ < 1) throw_invalid("--keep-checkpoints must be at least 1");
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec) throw_io("cannot create checkpoint directory '" + root_ + "': " + ec.message());
  for (const auto& e : fs::directory_iterator(root_, ec))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path(), ec);
}

CheckpointWriter::~CheckpointWriter() {
  if (worker_.joinable()) worker_.join();
}

void CheckpointWriter::wait() {
  if (worker_.joinable()) worker_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void CheckpointWriter::write_async(TrainerState state, json identity) {
  wait();
  worker_ = std::thread([this, st = std::move(state), id = std::move(identity)] {
    try {
      const auto t0 = std::chrono::steady_clock::now();
      write(st, id);
      write_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++written_;
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

std::string CheckpointWriter::write(const TrainerState& st, const json& identity) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s%012lld", kPrefix, static_cast<long long>(st.step));
  const fs::path final_dir = fs::path(root_) / name;
  const fs::path tmp = fs::path(root_) / (std::string(".tmp-") + name + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) throw_io("cannot create '" + tmp.string() + "': " + ec.message());
  try {
    std::vector<NamedTensor> tensors;
    tensors.push_back({"params", Shape{static_cast<int64_t>(st.params.size())}, st.params});
    for (size_t i = 0; i < st.slots.size(); ++i)
      tensors.push_back({"slot" + std::to_string(i), Shape{static_cast<int64_t>(st.slots[i].size())}, st.slots[i]});
    write_weights_file((tmp / "tensors.tdw").string(), tensors);
    test_delay();
    json history = json::array();
    for (const auto& l : st.history) history.push_back(log_to_json(l));
    json state{{"format", "tandem-checkpoint"},
               {"format_version", 1},
               {"step", st.step},
               {"epoch", st.epoch},
               {"epoch_step", st.epoch_step},
               {"epoch_loss_sum", st.epoch_loss_sum},
               {"epoch_correct", st.epoch_correct},
               {"epoch_seconds", st.epoch_seconds},
               {"history", history},
               {"identity", identity}};
    write_file_atomic((tmp / "state.json").string(), state.dump(1) + "\n");
    fsync_directory(tmp);
    // The commit: one rename. A checkpoint of the same step left by a killed run holds the same
    // bits (training is deterministic), so it is replaced.
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fsync_directory(root_);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw_io(std::string("cannot write checkpoint in '") + root_ + "': " + e.what(), "is the disk full?");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  write_file_atomic((fs::path(root_) / "latest").string(), std::string(name) + "\n");
  fsync_directory(root_);
  // Prune: keep the newest `keep_` committed checkpoints.
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(kPrefix, 0) == 0 && e.is_directory()) all.push_back(n);
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(keep_) < all.size(); ++i)
    if (all[i] != name) fs::remove_all(fs::path(root_) / all[i], ec);
  return final_dir.string();
}

std::optional<Checkpoint> read_latest_checkpoint(const std::string& root) {
  const fs::path latest = fs::path(root) / "latest";
  std::error_code ec;
  if (!fs::exists(latest, ec)) return std::nullopt;
  std::string name = read_text_file(latest.string());
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  if (name.rfind(kPrefix, 0) != 0 || name.find('/') != std::string::npos)
    throw_data(latest.string() + ": does not name a checkpoint ('" + name + "')",
               "remove the file to start over, or restore it from a backup");
  Checkpoint ck;
  ck.dir = (fs::path(root) / name).string();
  const std::string state_path = ck.dir + "/state.json";
  json st;
  try {
    st = json::parse(read_text_file(state_path));
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number that overflows a double
    throw_data(state_path + ": not valid JSON: " + e.what(), "the checkpoint is damaged");
  }
  try {
    if (st.at("format") != "tandem-checkpoint") throw_data(state_path + ": not a Tandem checkpoint");
    if (st.at("format_version") != 1)
      throw_data(state_path + ": unknown checkpoint format version " + st.at("format_version").dump(),
                 "this build reads version 1; resume with the Tandem that wrote it");
    ck.state.step = st.at("step").get<int64_t>();
    ck.state.epoch = st.at("epoch").get<int>();
    ck.state.epoch_step = st.at("epoch_step").get<int64_t>();
    ck.state.epoch_loss_sum = st.at("epoch_loss_sum").get<double>();
    ck.state.epoch_correct = st.at("epoch_correct").get<double>();
    ck.state.epoch_seconds = st.at("epoch_seconds").get<double>();
    for (const auto& h : st.at("history")) ck.state.history.push_back(log_from_json(h));
    ck.identity = st.at("identity");
  } catch (const json::exception& e) {
    throw_data(state_path + ": " + e.what(), "the checkpoint is damaged");
  }
  if (ck.state.step < 0 || ck.state.epoch < 0 || ck.state.epoch_step < 0)
    throw_data(state_path + ": negative positions", "the checkpoint is damaged");
  auto tensors = read_weights_file(ck.dir + "/tensors.tdw");
  if (tensors.empty() || tensors[0].name != "params")
    throw_data(ck.dir + "/tensors.tdw: the first tensor must be 'params'", "the checkpoint is damaged");
  ck.state.params = std::move(tensors[0].values);
  for (size_t i = 1; i < tensors.size(); ++i) {
    if (tensors[i].name != "slot" + std::to_string(i - 1))
      throw_data(ck.dir + "/tensors.tdw: unexpected tensor '" + tensors[i].name + "'", "the checkpoint is damaged");
    ck.state.slots.push_back(std::move(tensors[i].values));
  }
  return ck;
}

void require_same_identity(const json& saved, const json& now, const std::string& dir) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    const std::string& key = it.key();
    if (!saved.contains(key) || saved[key] != it.value())
      throw_invalid("cannot resume from " + dir + ": " + key + " was " +
                        (saved.contains(key) ? saved[key].dump() : std::string("absent")) + ", now " +
                        it.value().dump(),
                    "resume with the arguments of the original run (only --epochs may change)");
  }
}

}  // namespace tandem

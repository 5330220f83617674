// The checkpoint writer (storage/checkpoint.h): what it writes reads back bit for bit, `latest`
// follows the newest commit, older checkpoints are pruned to `keep`, background writes are ordered
// and a failed one is reported, stale temporaries are cleaned, and a changed identity is named.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "storage/checkpoint.h"
#include "temp_dir.h"
#include "test_support.h"

using namespace tandem;
using test::TempDir;
namespace fs = std::filesystem;

namespace {

TrainerState state_at(int64_t step) {
  TrainerState s;
  s.step = step;
  s.epoch = static_cast<int>(step / 10);
  s.epoch_step = step % 10;
  s.epoch_loss_sum = 1.25 * double(step);
  s.epoch_correct = double(step * 3);
  s.epoch_seconds = 0.5;
  s.params = test::random_floats(257, static_cast<uint64_t>(step));
  s.params[3] = -0.0f;  // bits, not values, must survive
  s.slots = {test::random_floats(257, 1000 + static_cast<uint64_t>(step)),
             test::random_floats(257, 2000 + static_cast<uint64_t>(step))};
  EpochLog e;
  e.epoch = 1;
  e.loss = 0.75;
  e.accuracy = 0.5;
  e.steps = 10;
  e.samples = 320;
  e.learning_rate = 0.01;
  if (s.epoch > 0) s.history.push_back(e);
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<std::string> checkpoint_dirs(const fs::path& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("checkpoints: written, read back bit for bit, latest followed, old ones pruned", "[cpu][checkpoint]") {
  TempDir tmp;
  const std::string root = tmp / "checkpoints";
  const nlohmann::json identity = {{"model", "mlp"}, {"seed", 7}, {"batch_size", 32}};
  CHECK_FALSE(read_latest_checkpoint(root).has_value());
  {
    CheckpointWriter w(root, 2);
    for (int64_t step : {5, 10, 17}) w.write(state_at(step), identity);
  }
  // keep 2: the two newest remain, nothing temporary is left.
  CHECK(checkpoint_dirs(root) == std::vector<std::string>{"ckpt-000000000010", "ckpt-000000000017"});
  auto ck = read_latest_checkpoint(root);
  REQUIRE(ck.has_value());
  const TrainerState want = state_at(17);
  CHECK(ck->state.step == 17);
  CHECK(ck->state.epoch == want.epoch);
  CHECK(ck->state.epoch_step == want.epoch_step);
  CHECK(ck->state.epoch_loss_sum == want.epoch_loss_sum);
  CHECK(ck->state.epoch_correct == want.epoch_correct);
  CHECK(same_bits(ck->state.params, want.params));
  REQUIRE(ck->state.slots.size() == 2);
  CHECK(same_bits(ck->state.slots[0], want.slots[0]));
  CHECK(same_bits(ck->state.slots[1], want.slots[1]));
  REQUIRE(ck->state.history.size() == 1);
  CHECK(ck->state.history[0].samples == 320);
  CHECK(ck->identity == identity);
  CHECK(fs::path(ck->dir).filename() == "ckpt-000000000017");
}

TEST_CASE("checkpoints: background writes commit in order; stale temporaries are removed", "[cpu][checkpoint]") {
  TempDir tmp;
  const std::string root = tmp / "checkpoints";
  fs::create_directories(fs::path(root) / ".tmp-ckpt-3-crashed");  // a write killed mid-way
  CheckpointWriter w(root, 3);
  CHECK_FALSE(fs::exists(fs::path(root) / ".tmp-ckpt-3-crashed"));
  for (int64_t step = 1; step <= 6; ++step) w.write_async(state_at(step), {{"model", "cnn"}});
  w.wait();
  CHECK(w.written() == 6);
  CHECK(checkpoint_dirs(root) ==
        std::vector<std::string>{"ckpt-000000000004", "ckpt-000000000005", "ckpt-000000000006"});
  auto ck = read_latest_checkpoint(root);
  REQUIRE(ck.has_value());
  CHECK(ck->state.step == 6);
  CHECK(same_bits(ck->state.params, state_at(6).params));
}

TEST_CASE("checkpoints: a failed background write is reported by wait(), not lost", "[cpu][checkpoint]") {
  TempDir tmp;
  const std::string root = tmp / "checkpoints";
  CheckpointWriter w(root, 2);
  w.write(state_at(2), {{"model", "mlp"}});
  // The `latest` pointer cannot be replaced (a directory holds its name; root or not): the next
  // write's commit fails on the writer thread.
  fs::remove(fs::path(root) / "latest");
  fs::create_directories(fs::path(root) / "latest" / "in-the-way");
  w.write_async(state_at(4), {{"model", "mlp"}});
  try {
    w.wait();
    FAIL("a failed checkpoint write went unreported");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Io);
    CHECK_THAT(e.what(), Catch::Contains("latest"));
  }
  w.wait();  // reported once
}

TEST_CASE("checkpoints: a changed identity is refused, naming the field", "[cpu][checkpoint]") {
  const nlohmann::json saved = {{"model", "mlp"}, {"seed", 7}, {"batch_size", 32}};
  nlohmann::json now = saved;
  CHECK_NOTHROW(require_same_identity(saved, now, "ckpt-1"));
  now["batch_size"] = 64;
  try {
    require_same_identity(saved, now, "ckpt-1");
    FAIL("a changed batch size was accepted");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("batch_size"));
  }
}

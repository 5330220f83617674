// Training checkpoints: DIR/checkpoints/ckpt-<step>/ holding state.json (positions, metrics so
// far, history, the run's identity) and tensors.tdw (weights arena and optimizer slots, CRC32C).
// Each is written in full into a temporary sibling, then committed by one rename; the `latest`
// pointer is replaced atomically afterwards, and older checkpoints are pruned.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <exception>
#include <string>
#include <thread>

#include "engine/trainer.h"

namespace tandem {

struct Checkpoint {
  TrainerState state;
  nlohmann::json identity;  // what must not change on resume (model, batch, seed, optimizer, data)
  std::string dir;          // the checkpoint directory it was read from
};

class CheckpointWriter {
 public:
  // `root` is DIR/checkpoints; created if needed. Stale temporary directories are removed.
  CheckpointWriter(std::string root, int keep);
  ~CheckpointWriter();  // waits for a write in flight
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;
  // Writes and commits a checkpoint; returns its directory.
  std::string write(const TrainerState& state, const nlohmann::json& identity);
  // The same on a background thread, so training continues while the files are written and
  // synced; waits for the previous write first. A failed write is rethrown by the next call or
  // by wait().
  void write_async(TrainerState state, nlohmann::json identity);
  void wait();
  // Seconds the background writes took and how many were committed (call after wait()).
  double write_seconds() const { return write_seconds_; }
  int written() const { return written_; }

 private:
  std::string root_;
  int keep_;
  double write_seconds_ = 0;
  int written_ = 0;
  std::thread worker_;
  std::exception_ptr error_;
};

// The checkpoint `latest` points to, or nullopt when `root` holds none. Errors name the file.
std::optional<Checkpoint> read_latest_checkpoint(const std::string& root);

// Throws InvalidArgument naming the first field where `now` differs from the checkpoint's.
void require_same_identity(const nlohmann::json& saved, const nlohmann::json& now, const std::string& dir);

}  // namespace tandem

// BackupAndRestore (--checkpoint-every N|epoch, --resume): commits a training checkpoint every N
// steps or at every epoch end (taking the state is collective; rank 0 writes it in the
// background), and a resumed run continues from the latest committed one. Given to every rank.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "dist/communicator.h"
#include "engine/callback.h"
#include "storage/checkpoint.h"

namespace tandem {

class BackupAndRestore : public Callback {
 public:
  struct Options {
    std::string root;         // DIR/checkpoints
    nlohmann::json identity;  // the run's; a resumed checkpoint must match it
    int64_t every_steps = 0;  // 0: not by steps
    bool every_epoch = false;
    int keep = 3;
    bool resume = false;
    std::string output;  // the run's --output: a finished run's metrics.json names its model version
    int epochs = 0;      // the run's --epochs
  };
  // `comm`: the job's communicator, null in one process.
  BackupAndRestore(Options options, Communicator* comm, bool rank0);
  // --resume: restore the latest committed checkpoint. A run of the same identity and --epochs that
  // already finished and saved its model is not repeated: nothing is trained or written again.
  void on_train_begin() override;
  void on_batch_end(const BatchLog& log) override;
  void on_epoch_end(const EpochLog& log) override;
  void on_train_end() override;  // waits for the checkpoint in flight
  // Waits until rank 0 has committed the checkpoint in flight, then for every rank: after a stop
  // that all ranks agree on, so that no rank ends the job while rank 0 still writes.
  void settle();

  // The resumed run had already finished (the same on every rank: rank 0 decides).
  bool finished_before() const { return finished_; }
  bool writes() const { return writer_ != nullptr; }
  int written() const { return writer_->written(); }  // after settle()
  double write_seconds() const { return writer_->write_seconds(); }
  double blocking_seconds() const { return blocking_seconds_; }  // on the training thread

 private:
  void commit();
  Options options_;
  Communicator* comm_;
  bool rank0_;
  std::unique_ptr<CheckpointWriter> writer_;  // rank 0 of a run that writes checkpoints
  double blocking_seconds_ = 0;
  bool finished_ = false;
};

}  // namespace tandem

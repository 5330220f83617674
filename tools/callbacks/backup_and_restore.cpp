#include "tools/callbacks/backup_and_restore.h"

#include <chrono>
#include <cstdio>
#include <optional>

#include "engine/trace.h"
#include "engine/trainer.h"

namespace tandem {

BackupAndRestore::BackupAndRestore(Options options, Communicator* comm, bool rank0)
    : options_(std::move(options)), comm_(comm), rank0_(rank0) {
  if ((options_.every_steps || options_.every_epoch) && rank0_)
    writer_ = std::make_unique<CheckpointWriter>(options_.root, options_.keep);
}

void BackupAndRestore::on_train_begin() {
  if (!options_.resume) return;
  std::optional<Checkpoint> ck = read_latest_checkpoint(options_.root);
  if (ck) {
    require_same_identity(ck->identity, options_.identity, ck->dir);
    trainer().restore(ck->state);
    if (rank0_)
      std::printf("resuming from %s: epoch %d, step %lld\n", ck->dir.c_str(), ck->state.epoch + 1,
                  static_cast<long long>(ck->state.step));
  } else if (rank0_) {
    std::printf("no committed checkpoint in %s yet: starting from the beginning\n", options_.root.c_str());
  }
}

void BackupAndRestore::on_batch_end(const BatchLog& log) {
  if (options_.every_steps && log.global_step % options_.every_steps == 0) commit();
}

void BackupAndRestore::on_epoch_end(const EpochLog&) {
  if (options_.every_epoch) commit();
}

void BackupAndRestore::commit() {
  trace::Span span("checkpoint snapshot");  // the training thread's part; the files are written behind it
  const auto t0 = std::chrono::steady_clock::now();
  TrainerState st = trainer().state();  // collective in a multi-process job
  if (comm_) comm_->barrier();
  if (writer_) writer_->write_async(std::move(st), options_.identity);
  blocking_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BackupAndRestore::on_train_end() {
  if (writer_) writer_->wait();
}

void BackupAndRestore::settle() {
  if (writer_) writer_->wait();
  if (comm_) comm_->barrier();
}

}  // namespace tandem

// TensorBoard (--tensorboard DIR, --tensorboard-update-freq): event files laid out as Keras's
// TensorBoard callback lays them out, DIR/train/ and DIR/validation/, each holding one
// events.out.tfevents.<seconds>.<host>.<pid>.<n>.v2 file per run: TFRecord records (little-endian
// length, its masked CRC32C, an Event proto, the proto's masked CRC32C), the first Event holding
// file_version "brain.Event:2", then scalar summaries:
//   every epoch (step = the epoch counted from 0, as Keras counts it)
//     train/       epoch_loss, epoch_accuracy, epoch_learning_rate, epoch_samples_per_second
//     validation/  epoch_loss, epoch_accuracy
//   every `update_freq` optimizer steps (0: never), at the global step
//     train/       batch_loss, batch_accuracy (the epoch's running means, as Keras logs them)
// Records are flushed at every epoch end (and batch summary), so a reader follows a live run and a
// killed one leaves at most a truncated last record, which TensorBoard skips. A resumed run writes
// new files: TensorBoard merges a directory's files. Rank 0's only.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/callback.h"

namespace tandem {

class TensorBoard : public Callback {
 public:
  TensorBoard(std::string dir, int64_t update_freq, bool validation);
  ~TensorBoard() override;
  void on_train_begin() override;  // creates the directories and files; throws Error(Io)
  void on_epoch_begin(int epoch, int epochs, int64_t steps) override;
  void on_batch_end(const BatchLog& log) override;
  void on_epoch_end(const EpochLog& log) override;

  class EventFile;  // one events.out.tfevents file

 private:
  std::string dir_;
  int64_t update_freq_;
  bool validation_;
  std::unique_ptr<EventFile> train_, val_;
};

}  // namespace tandem

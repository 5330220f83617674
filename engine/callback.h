// Callback: what observes training, as Keras's callbacks do. The Trainer calls every callback of
// fit's list, in order, at these points, on every process; it knows none of them by name. One
// that prints or writes files is given to rank 0 only (or checks trainer().rank()); one that
// takes part in a collective is given to every rank, at the same place in the list.
#pragma once
#include <cstdint>

namespace tandem {

class Trainer;
struct BatchLog;
struct EpochLog;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin() {}  // after a resumed trainer's restore, before the first step
  virtual void on_epoch_begin(int epoch, int epochs, int64_t steps) {}
  // After each optimizer step; the log is the same on every process. May throw to stop training.
  virtual void on_batch_end(const BatchLog& log) {}
  virtual void on_epoch_end(const EpochLog& log) {}
  virtual void on_train_end() {}  // when fit returns normally (not when a callback threw)

  void set_trainer(Trainer* trainer) { trainer_ = trainer; }

 protected:
  Trainer& trainer() const { return *trainer_; }

 private:
  Trainer* trainer_ = nullptr;
};

}  // namespace tandem

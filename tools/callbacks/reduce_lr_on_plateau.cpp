#include "tools/callbacks/reduce_lr_on_plateau.h"

#include <cstdio>

#include "engine/trainer.h"

namespace tandem {

ReduceLROnPlateau::ReduceLROnPlateau(double factor, int patience, bool rank0)
    : factor_(factor), patience_(patience), rank0_(rank0) {}

bool ReduceLROnPlateau::observe(const EpochLog& log) {
  if (log.val_loss < best_ - 1e-4) {
    best_ = log.val_loss;
    wait_ = 0;
    return false;
  }
  if (++wait_ < patience_) return false;
  wait_ = 0;
  scale_ *= factor_;
  return true;
}

void ReduceLROnPlateau::on_train_begin() {
  for (const EpochLog& l : trainer().history()) observe(l);
  trainer().set_learning_rate_factor(scale_);
}

void ReduceLROnPlateau::on_epoch_end(const EpochLog& log) {
  if (!observe(log)) return;
  trainer().set_learning_rate_factor(scale_);
  if (rank0_)
    std::printf("reduce lr on plateau: val_loss has not improved for %d epochs; the rate is now x%g of the schedule's\n",
                patience_, scale_);
}

}  // namespace tandem

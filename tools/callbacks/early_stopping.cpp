#include "tools/callbacks/early_stopping.h"

#include <cstdio>

namespace tandem {

EarlyStopping::EarlyStopping(std::string monitor, int patience, bool rank0)
    : best_(std::move(monitor)), patience_(patience), rank0_(rank0) {}

void EarlyStopping::on_train_begin() { best_.recover(trainer().history()); }

void EarlyStopping::on_epoch_end(const EpochLog& log) {
  best_.update(log);
  if (log.epoch - best_.epoch < patience_) return;
  if (rank0_)
    std::printf("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)\n", best_.monitor.c_str(),
                patience_, best_.value, best_.epoch);
  trainer().stop_training = true;
}

}  // namespace tandem

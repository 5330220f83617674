// EarlyStopping (--early-stopping PATIENCE): stops training after PATIENCE epochs without an
// improvement of the monitored metric. Runs on every rank (the epoch logs are the same on all).
#pragma once
#include "engine/callback.h"
#include "tools/callbacks/best_epoch.h"

namespace tandem {

class EarlyStopping : public Callback {
 public:
  EarlyStopping(std::string monitor, int patience, bool rank0);
  void on_train_begin() override;
  void on_epoch_end(const EpochLog& log) override;

 private:
  BestEpoch best_;
  int patience_;
  bool rank0_;
};

}  // namespace tandem

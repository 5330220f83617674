// ReduceLROnPlateau (--reduce-lr-on-plateau FACTOR[,PATIENCE]): multiplies the learning rate by
// FACTOR when val_loss has not improved (by more than 1e-4, Keras's min_delta) for PATIENCE epochs
// (default 10), as Keras's callback with mode min, no cooldown and no minimum rate. The factor in
// force follows from the history alone, so a resumed run recovers it. Runs on every rank.
#pragma once
#include <vector>

#include "engine/callback.h"

namespace tandem {

class ReduceLROnPlateau : public Callback {
 public:
  ReduceLROnPlateau(double factor, int patience, bool rank0);
  void on_train_begin() override;  // replays a resumed run's history
  void on_epoch_end(const EpochLog& log) override;

 private:
  bool observe(const EpochLog& log);  // true when the rate is reduced after this epoch
  double factor_;
  int patience_;
  bool rank0_;
  double best_ = 1e300;
  int wait_ = 0;
  double scale_ = 1;  // the product of the reductions so far
};

}  // namespace tandem

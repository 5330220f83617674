// BestEpoch: the best epoch of a monitored validation metric (val_loss: lowest; val_accuracy:
// highest), as ModelCheckpoint and EarlyStopping track it.
#pragma once
#include <string>
#include <vector>

#include "engine/trainer.h"

namespace tandem {

struct BestEpoch {
  explicit BestEpoch(std::string metric)
      : monitor(std::move(metric)), value(monitor == "val_accuracy" ? -1e300 : 1e300) {}
  double monitored(const EpochLog& l) const { return monitor == "val_accuracy" ? l.val_accuracy : l.val_loss; }
  // True when `l` improves on the best so far, which it then becomes.
  bool update(const EpochLog& l) {
    const double v = monitored(l);
    if (!(monitor == "val_accuracy" ? v > value : v < value)) return false;
    value = v;
    epoch = l.epoch;
    return true;
  }
  void recover(const std::vector<EpochLog>& history) {  // a resumed run's epochs so far
    for (const auto& l : history) update(l);
  }

  std::string monitor;
  double value;
  int epoch = 0;  // 0: none yet
};

}  // namespace tandem

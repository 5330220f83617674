// CSVLogger (--csv-log FILE): one row per epoch in Keras's CSVLogger layout: the columns
// epoch,accuracy,learning_rate,loss,val_accuracy,val_loss (no val_ columns without a validation
// set), epoch counted from 0 as Keras does, values in their shortest round-trip form. A resumed
// run keeps the rows of the epochs its checkpoint holds and appends, so no epoch repeats. Rank 0's only.
#pragma once
#include <string>

#include "engine/callback.h"

namespace tandem {

class CSVLogger : public Callback {
 public:
  CSVLogger(std::string path, bool validation);
  void on_train_begin() override;  // the header and the rows of the history so far
  void on_epoch_end(const EpochLog& log) override;

 private:
  std::string row(const EpochLog& log) const;
  std::string path_;
  bool validation_;
};

}  // namespace tandem

// ModelCheckpoint (--save-best METRIC): keeps the weights of the best epoch (on every rank), writes
// them as a model version to DIR/best_model (rank 0), and puts them back into the trainer when
// training ends, so that the saved model is the best epoch's.
#pragma once
#include <string>
#include <vector>

#include "engine/callback.h"
#include "engine/model.h"
#include "tools/callbacks/best_epoch.h"

namespace tandem {

class ModelCheckpoint : public Callback {
 public:
  // `dir` empty: the best weights are kept in memory only (a run without --output).
  ModelCheckpoint(const Model& model, std::vector<std::string> class_names, std::string monitor, std::string dir,
                  bool rank0);
  void on_train_begin() override;  // a resumed run's best so far, from its history and `dir`
  void on_epoch_end(const EpochLog& log) override;
  void on_train_end() override;

 private:
  const Model& model_;
  std::vector<std::string> class_names_;
  BestEpoch best_;
  std::string dir_;
  bool rank0_;
  std::vector<float> weights_;  // the best epoch's arena; empty before the first
};

}  // namespace tandem

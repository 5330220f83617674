// The pieces of `tandem train` around fit: the callback list built from the flags, and the files a
// finished run leaves in --output (a model version, history.json, metrics.json).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dist/strategy.h"
#include "tools/callbacks/backup_and_restore.h"
#include "tools/train_args.h"

namespace tandem::cli {

struct TrainCallbacks {
  std::vector<std::unique_ptr<Callback>> owned;  // in the order they run
  BackupAndRestore* backup = nullptr;            // --checkpoint-every, --resume
  std::vector<Callback*> list() const;
};

// TerminateOnNaN always; BackupAndRestore before the callbacks that recover their state from a
// resumed run's history; the callbacks that write files on the chief only.
TrainCallbacks make_callbacks(const TrainArgs& args, const Model& model, const std::vector<std::string>& class_names,
                              const nlohmann::json& identity, const Strategy& strategy, bool validation);

// Creates --output DIR (on the chief), refusing an unusable one before any time is spent training.
void prepare_output_dir(const std::string& dir);

// Writes DIR/model/<next version>/, DIR/history.json and DIR/metrics.json; prints the version.
// metrics.json also records the run's identity, --epochs and final step (BackupAndRestore reads them).
void save_run(const TrainArgs& args, const Model& model, const OptimizerConfig& opt, const nlohmann::json& identity,
              Trainer& trainer, const std::vector<std::string>& class_names, const EvalResult& test,
              const BackupAndRestore* backup);

}  // namespace tandem::cli

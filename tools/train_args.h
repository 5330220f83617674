// `tandem train`'s flags: registration, validation, and what they turn into (the strategy's
// description, the optimizer, the trainer's options, the run's identity).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "dist/strategy.h"
#include "engine/optimizer.h"
#include "engine/trainer.h"

namespace tandem::cli {

struct TrainArgs {
  std::string model = "mlp";
  std::string data;
  int epochs = 10;
  int64_t batch_size = 32;
  std::string optimizer = "adam";
  double lr = 0;  // with lr_given; else the optimizer's default
  double momentum = 0;
  bool lr_given = false, momentum_given = false;
  bool nesterov = false;
  std::string schedule = "exponential";
  double decay_rate = 0.8;
  int64_t decay_steps = 0;
  uint64_t seed = 42;
  int64_t validation_size = 5000;
  int64_t train_samples = 0;  // 0 = all
  bool one_hot = false;
  std::string output;  // after check(): --resume's DIR when resuming
  StrategySpec strategy;
  bool no_overlap = false;
  int64_t check_replicas = -1;  // -1 = off; 0 = at the end of every epoch; N = every N steps too
  std::string cuda_graphs = "on";
  std::string checkpoint_every;  // "epoch" or a number of steps
  int keep_checkpoints = 3;
  std::string resume;
  std::string save_best;  // val_loss | val_accuracy
  int early_stopping = 0;
  std::string csv_log;
  std::string reduce_lr_on_plateau;  // FACTOR[,PATIENCE]
  std::string tensorboard;
  std::string tensorboard_update_freq = "epoch";  // epoch | batch | N
  std::string timeline;  // a Chrome trace FILE

  // Filled in by check():
  int64_t checkpoint_steps = 0;
  bool checkpoint_epochs = false;
  std::pair<double, int> plateau{0, 0};  // factor, patience
  int64_t tensorboard_steps = 0;         // 0: epoch summaries only
  std::string monitor = "val_loss";      // what --save-best and --early-stopping watch

  const CLI::Option* lr_option = nullptr;
  const CLI::Option* momentum_option = nullptr;
};

void add_train_flags(CLI::App& command, TrainArgs& args);

// Every check that needs no data and no device, before anything is loaded or written; an explicit
// value is never replaced by a default: it is valid or it is an error.
void check(TrainArgs& args);

OptimizerConfig optimizer_config(const TrainArgs& args, int64_t steps_per_epoch);
TrainOptions train_options(const TrainArgs& args);

// Everything that shapes the computation. Ranks of a job must agree on it, and a resumed run must
// match its checkpoint's. The replica count may change on resume: shuffling, dropout and the global
// batch do not depend on it.
nlohmann::json run_identity(const TrainArgs& args, const Model& model, const OptimizerConfig& opt, bool gpu,
                            int64_t train_samples, int64_t validation_samples);

}  // namespace tandem::cli

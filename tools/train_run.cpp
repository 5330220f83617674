#include "tools/train_run.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>

#include "engine/errors.h"
#include "storage/atomic_file.h"
#include "storage/loaded_model.h"
#include "storage/model_dir.h"
#include "tools/callbacks/csv_logger.h"            // defines: CSVLogger (--csv-log)
#include "tools/callbacks/early_stopping.h"        // defines: EarlyStopping (--early-stopping)
#include "tools/callbacks/model_checkpoint.h"      // defines: ModelCheckpoint (--save-best)
#include "tools/callbacks/progress_bar.h"          // defines: ProgressBar (Keras's progress output)
#include "tools/callbacks/reduce_lr_on_plateau.h"  // defines: ReduceLROnPlateau (--reduce-lr-on-plateau)
#include "tools/callbacks/tensorboard.h"           // defines: TensorBoard (--tensorboard)
#include "tools/callbacks/terminate_on_nan.h"      // defines: TerminateOnNaN (always on)
#include "tools/callbacks/timeline.h"              // defines: Timeline (--timeline)

namespace tandem::cli {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<Callback*> TrainCallbacks::list() const {
  std::vector<Callback*> out;
  for (const auto& c : owned) out.push_back(c.get());
  return out;
}

TrainCallbacks make_callbacks(const TrainArgs& a, const Model& model, const std::vector<std::string>& class_names,
                              const json& identity, const Strategy& strategy, bool validation) {
  const bool chief = strategy.is_chief();
  TrainCallbacks c;
  c.owned.push_back(std::make_unique<TerminateOnNaN>());
  if (a.checkpoint_steps || a.checkpoint_epochs || !a.resume.empty()) {
    BackupAndRestore::Options b;
    b.root = (fs::path(a.output) / "checkpoints").string();
    b.identity = identity;
    b.every_steps = a.checkpoint_steps;
    b.every_epoch = a.checkpoint_epochs;
    b.keep = a.keep_checkpoints;
    b.resume = !a.resume.empty();
    b.output = a.output;
    b.epochs = a.epochs;
    auto backup = std::make_unique<BackupAndRestore>(std::move(b), strategy.communicator(), chief);
    c.backup = backup.get();
    c.owned.push_back(std::move(backup));
  }
  if (chief)
    c.owned.push_back(std::make_unique<ProgressBar>(stdout, ::isatty(STDOUT_FILENO) == 1 && !launched_by_mpi()));
  if (chief && !a.csv_log.empty()) c.owned.push_back(std::make_unique<CSVLogger>(a.csv_log, validation));
  if (chief && !a.tensorboard.empty())
    c.owned.push_back(std::make_unique<TensorBoard>(a.tensorboard, a.tensorboard_steps, validation));
  if (!a.reduce_lr_on_plateau.empty())
    c.owned.push_back(std::make_unique<ReduceLROnPlateau>(a.plateau.first, a.plateau.second, chief));
  if (!a.save_best.empty())
    c.owned.push_back(std::make_unique<ModelCheckpoint>(
        model, class_names, a.monitor, a.output.empty() ? "" : (fs::path(a.output) / "best_model").string(), chief));
  if (a.early_stopping > 0) c.owned.push_back(std::make_unique<EarlyStopping>(a.monitor, a.early_stopping, chief));
  if (!a.timeline.empty())  // every rank records; the chief writes
    c.owned.push_back(std::make_unique<Timeline>(a.timeline, strategy.communicator(), chief));
  return c;
}

void prepare_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw_io("cannot create output directory '" + dir + "'", "choose a writable --output DIR");
}

namespace {

std::string iso_time_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

void save_run(const TrainArgs& a, const Model& model, const OptimizerConfig& opt, const json& identity,
              Trainer& trainer, const std::vector<std::string>& class_names, const EvalResult& test,
              const BackupAndRestore* backup) {
  const std::vector<EpochLog>& logs = trainer.history();
  json metadata{{"tandem_version", TANDEM_VERSION},
                {"created", iso_time_now()},
                {"epochs", a.epochs},
                {"batch_size", a.batch_size},
                {"optimizer", {{"name", opt.name}, {"lr", opt.lr}, {"momentum", opt.momentum}, {"nesterov", opt.nesterov}}},
                {"seed", a.seed},
                {"one_hot", a.one_hot},
                {"strategy", a.strategy.name},
                {"replicas", trainer.replicas_total()},
                {"batch_invariant", a.strategy.batch_invariant},
                {"test_loss", test.loss},
                {"test_accuracy", test.accuracy}};
  ModelVersion version;
  version.model_json = model_json(model, class_names, metadata);
  version.tensors = model.to_tensors(trainer.weights());
  const std::string model_dir = (fs::path(a.output) / "model").string();
  const std::string version_dir = (fs::path(model_dir) / std::to_string(next_version(model_dir))).string();
  write_model_version(version_dir, version);

  json history{{"loss", json::array()}, {"accuracy", json::array()}};
  double train_seconds = 0;
  int64_t train_samples = 0;
  for (const auto& l : logs) {
    history["loss"].push_back(l.loss);
    history["accuracy"].push_back(l.accuracy);
    if (l.has_val) {
      history["val_loss"].push_back(l.val_loss);
      history["val_accuracy"].push_back(l.val_accuracy);
    }
    history["epoch_seconds"].push_back(l.seconds);
    history["learning_rate"].push_back(l.learning_rate);
    train_seconds += l.seconds;
    train_samples += l.samples;
  }
  write_file_atomic((fs::path(a.output) / "history.json").string(), history.dump(2) + "\n");
  json metrics{{"test_loss", test.loss},
               {"test_accuracy", test.accuracy},
               {"epochs", logs.size()},
               {"samples_per_second", train_seconds > 0 ? double(train_samples) / train_seconds : 0},
               {"train_seconds", train_seconds},
               {"epochs_requested", a.epochs},
               {"steps", trainer.global_step()},
               {"identity", identity},  // with the two above: a --resume of this finished run is not repeated
               {"batch_size", a.batch_size},
               {"model", model.name()},
               {"strategy", a.strategy.name},
               {"replicas", trainer.replicas_total()},
               {"batch_invariant", a.strategy.batch_invariant},
               {"model_version_dir", version_dir}};
  if (backup && backup->writes()) {  // waited for by its on_train_end
    metrics["checkpoints_written"] = backup->written();
    metrics["checkpoint_blocking_seconds"] = backup->blocking_seconds();  // on the training thread
    metrics["checkpoint_write_seconds"] = backup->write_seconds();      // in the background
  }
  write_file_atomic((fs::path(a.output) / "metrics.json").string(), metrics.dump(2) + "\n");
  std::printf("saved model version %s\n", version_dir.c_str());
}

}  // namespace tandem::cli

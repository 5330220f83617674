#include "tools/callbacks/backup_and_restore.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "engine/trace.h"
#include "engine/trainer.h"

namespace tandem {

BackupAndRestore::BackupAndRestore(Options options, Communicator* comm, bool rank0)
    : options_(std::move(options)), comm_(comm), rank0_(rank0) {
  if ((options_.every_steps || options_.every_epoch) && rank0_)
    writer_ = std::make_unique<CheckpointWriter>(options_.root, options_.keep);
}

namespace {

// The model version that a finished run of this identity and --epochs saved (its metrics.json,
// written last by save_run), or "" when there is none: the run has not finished, or `output` holds
// another run's files.
std::string finished_version(const std::string& output, const nlohmann::json& identity, int epochs,
                             int64_t checkpoint_step) {
  namespace fs = std::filesystem;
  std::ifstream in(fs::path(output) / "metrics.json");
  if (!in) return "";
  const nlohmann::json m = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!m.is_object() || m.value("identity", nlohmann::json()) != identity ||
      m.value("epochs_requested", nlohmann::json()) != epochs || !m.contains("steps") ||
      !m["steps"].is_number_integer() || m["steps"].get<int64_t>() < checkpoint_step ||
      !m.contains("model_version_dir") || !m["model_version_dir"].is_string())
    return "";
  // Looked up under this --output, which may be spelled differently from the run that wrote it.
  const fs::path dir = fs::path(output) / "model" / fs::path(m["model_version_dir"].get<std::string>()).filename();
  std::error_code ec;
  return fs::is_directory(dir, ec) ? dir.string() : "";
}

}  // namespace

void BackupAndRestore::on_train_begin() {
  if (!options_.resume) return;
  std::optional<Checkpoint> ck = read_latest_checkpoint(options_.root);
  if (ck) require_same_identity(ck->identity, options_.identity, ck->dir);
  const std::string saved =
      rank0_ ? finished_version(options_.output, options_.identity, options_.epochs, ck ? ck->state.step : 0) : "";
  int finished = saved.empty() ? 0 : 1;
  if (comm_) comm_->broadcast(&finished, sizeof(finished), 0);  // a rank that stopped alone would hang the others
  finished_ = finished != 0;
  if (finished_) {
    if (rank0_)
      std::printf(
          "%s already finished its %d epochs and saved model version %s; nothing to do "
          "(resume with a larger --epochs to train on)\n",
          options_.output.c_str(), options_.epochs, saved.c_str());
    trainer().stop_training = true;
    return;
  }
  if (ck) {
    trainer().restore(ck->state);
    if (rank0_)
      std::printf("resuming from %s: epoch %d, step %lld\n", ck->dir.c_str(), ck->state.epoch + 1,
                  static_cast<long long>(ck->state.step));
  } else if (rank0_) {
    std::printf("no committed checkpoint in %s yet: starting from the beginning\n", options_.root.c_str());
  }
}

void BackupAndRestore::on_batch_end(const BatchLog& log) {
  if (options_.every_steps && log.global_step % options_.every_steps == 0) commit();
}

void BackupAndRestore::on_epoch_end(const EpochLog&) {
  if (options_.every_epoch) commit();
}

void BackupAndRestore::commit() {
  trace::Span span("checkpoint snapshot");  // the training thread's part; the files are written behind it
  const auto t0 = std::chrono::steady_clock::now();
  TrainerState st = trainer().state();  // collective in a multi-process job
  if (comm_) comm_->barrier();
  if (writer_) writer_->write_async(std::move(st), options_.identity);
  blocking_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BackupAndRestore::on_train_end() {
  if (writer_) writer_->wait();
}

void BackupAndRestore::settle() {
  if (writer_) writer_->wait();
  if (comm_) comm_->barrier();
}

}  // namespace tandem

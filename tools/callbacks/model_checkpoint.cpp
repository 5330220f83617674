#include "tools/callbacks/model_checkpoint.h"

#include <cstdio>
#include <filesystem>

#include "storage/loaded_model.h"
#include "storage/model_dir.h"

namespace tandem {

ModelCheckpoint::ModelCheckpoint(const Model& model, std::vector<std::string> class_names, std::string monitor,
                                 std::string dir, bool rank0)
    : model_(model), class_names_(std::move(class_names)), best_(std::move(monitor)), dir_(std::move(dir)),
      rank0_(rank0) {}

void ModelCheckpoint::on_train_begin() {
  best_.recover(trainer().history());
  if (best_.epoch > 0 && !dir_.empty() && std::filesystem::is_directory(dir_))
    weights_ = model_.from_tensors(read_model_version(dir_).tensors, dir_);
}

void ModelCheckpoint::on_epoch_end(const EpochLog& log) {
  if (!best_.update(log)) return;
  weights_ = trainer().weights();
  if (!rank0_ || dir_.empty()) return;
  ModelVersion v;
  v.model_json = model_json(model_, class_names_,
                            nlohmann::json{{"epoch", log.epoch}, {"monitor", best_.monitor}, {"value", best_.value}});
  v.tensors = model_.to_tensors(weights_);
  write_model_version(dir_, v, true);
}

void ModelCheckpoint::on_train_end() {
  if (weights_.empty()) return;
  trainer().set_weights(weights_);
  if (rank0_)
    std::printf("restored the best weights: epoch %d, %s %.4f\n", best_.epoch, best_.monitor.c_str(), best_.value);
}

}  // namespace tandem

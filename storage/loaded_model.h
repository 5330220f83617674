// A trained model reloaded from a version directory: the files (verified), the Model built from
// model.json's spec, and its parameter arena. Used by the CLI, the exporter and the server.
#pragma once
#include <string>
#include <vector>

#include "engine/model.h"
#include "storage/model_dir.h"

namespace tandem {

struct LoadedModel {
  ModelVersion version;
  Model model;
  std::vector<float> arena;
};

// model.json for `model`: format, architecture ("spec"), input shape, class names, the weights'
// names and shapes, and `metadata`.
nlohmann::json model_json(const Model& model, const std::vector<std::string>& class_names,
                          const nlohmann::json& metadata);

// Throws what read_model_version throws, and Error(Data) naming model.json when its "spec" is
// missing or invalid, or when the weights do not fit the spec.
LoadedModel load_model(const std::string& version_dir);

}  // namespace tandem

#include "export/loaded_model.h"

#include "engine/errors.h"

namespace tandem {

LoadedModel load_model(const std::string& version_dir) {
  ModelVersion v = read_model_version(version_dir);
  const std::string json_path = version_dir + "/" + kModelJsonName;
  if (!v.model_json.contains("spec"))
    throw_data(json_path + ": missing field \"spec\"", "model.json must be the file written by Tandem");
  Model model = Model::from_spec(v.model_json["spec"], json_path);
  std::vector<float> arena = model.from_tensors(v.tensors, version_dir);
  return LoadedModel{std::move(v), std::move(model), std::move(arena)};
}

}  // namespace tandem

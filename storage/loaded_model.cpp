#include "storage/loaded_model.h"

#include "engine/errors.h"

namespace tandem {

nlohmann::json model_json(const Model& model, const std::vector<std::string>& class_names,
                          const nlohmann::json& metadata) {
  nlohmann::json weights = nlohmann::json::array();
  for (const auto& p : model.params()) weights.push_back({{"name", p.name}, {"shape", p.shape.dims}});
  return nlohmann::json{{"format", "tandem-model"},
                        {"format_version", 1},
                        {"name", model.name()},
                        {"input_shape", model.input_shape().dims},
                        {"class_names", class_names},
                        {"spec", model.spec()},
                        {"weights", weights},
                        {"metadata", metadata}};
}

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

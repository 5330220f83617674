// Versioned model directories: <base>/<name>/<version>/ holding model.json and weights.tdw.
// A version is written into a temporary sibling and renamed, so readers never see half of one.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "storage/weights_file.h"

namespace tandem {

struct ModelVersion {
  nlohmann::json model_json;  // architecture ("spec"), input shape, class names, metadata
  std::vector<NamedTensor> tensors;
};

constexpr const char* kModelJsonName = "model.json";
constexpr const char* kWeightsFileName = "weights.tdw";

// Writes `version_dir` atomically. Throws InvalidArgument if it exists and !overwrite.
void write_model_version(const std::string& version_dir, const ModelVersion& version, bool overwrite = false);
// Reads and verifies a version directory (model.json parsed, weights checksummed, every tensor
// named in model.json present with the declared shape). Errors name the file and the tensor.
ModelVersion read_model_version(const std::string& version_dir);

// Versions present under <base>/<name>/ (numeric directory names only), ascending.
std::vector<int64_t> list_versions(const std::string& model_dir);
int64_t next_version(const std::string& model_dir);  // 1 if none

}  // namespace tandem

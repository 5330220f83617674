// A model version directory as `tandem predict`, `export` and `serve` load it: model.json (the
// spec, input shape, class names, the weights' names and shapes) and weights.tdw, through
// load_model (files verified, the Model built, the weights fitted to it). A bundle (fuzz_target.h),
// the weights' checksums made right (with_weights_crcs).
#include "storage/loaded_model.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(model_version) {
  static const std::vector<std::string> kFiles = {"model.json", "weights.tdw"};
  auto files = tandem::fuzz::split_files({reinterpret_cast<const char*>(data), size}, kFiles);
  for (auto& [name, content] : files)
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tdw") == 0) content = tandem::fuzz::with_weights_crcs(content);
  const std::string dir = tandem::fuzz::write_bundle(files);
  tandem::fuzz::expect_clean("model_version", [&] {
    const tandem::LoadedModel m = tandem::load_model(dir);
    if (m.arena.size() != m.model.arena_floats()) std::abort();
  });
  return 0;
}

// --model_config_file (and what the config poller re-reads): a text-format ModelServerConfig
// through read_model_config_file (libprotobuf's text parser, then names, base paths, version
// policies and labels validated). The input is the file.
#include "fuzz_target.h"
#include "serve/config.h"

TANDEM_FUZZ_TARGET(model_config) {
  const std::string path = tandem::fuzz::scratch_file("models.config", {reinterpret_cast<const char*>(data), size});
  tandem::fuzz::expect_clean("model_config", [&] { tandem::serve::read_model_config_file(path); });
  return 0;
}

// --monitoring_config_file: a text-format MonitoringConfig through read_monitoring_config_file.
// The input is the file.
#include "fuzz_target.h"
#include "serve/config.h"

TANDEM_FUZZ_TARGET(monitoring_config) {
  const std::string path = tandem::fuzz::scratch_file("monitoring.config", {reinterpret_cast<const char*>(data), size});
  tandem::fuzz::expect_clean("monitoring_config", [&] { tandem::serve::read_monitoring_config_file(path); });
  return 0;
}

// The saved_model.pb reader behind `tandem inspect` (export/savedmodel_writer.h): the input is the file. The description is
// printed as JSON, as `tandem inspect` prints it (names from a stranger's file may be any bytes).
#include "export/savedmodel_writer.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(saved_model) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  tandem::fuzz::expect_clean("saved_model", [&] { tandem::savedmodel::describe_saved_model(bytes, "saved_model.pb").dump(2); });
  return 0;
}

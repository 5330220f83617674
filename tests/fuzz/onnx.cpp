// The model.onnx reader behind `tandem inspect` (export/onnx_writer.h): the input is the file. The description is
// printed as JSON, as `tandem inspect` prints it (names from a stranger's file may be any bytes).
#include "export/onnx_writer.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(onnx) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  tandem::fuzz::expect_clean("onnx", [&] { tandem::onnx::describe_onnx(bytes, "model.onnx").dump(2); });
  return 0;
}

// The model.tflite reader behind `tandem inspect` (export/tflite_writer.h; the flatbuffers Verifier
// first): the input is the file.
#include "export/tflite_writer.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(tflite) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  tandem::fuzz::expect_clean("tflite", [&] { tandem::tfl::describe_tflite(bytes, "model.tflite").dump(2); });
  return 0;
}

// The native weights file (weights.tdw: named float32 tensors with CRC32C): the input is the file,
// its checksums made right (with_weights_crcs) so that the checks behind them are reached.
#include "storage/weights_file.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(weights) {
  const std::string path = tandem::fuzz::scratch_file(
      "weights.tdw", tandem::fuzz::with_weights_crcs(std::string(reinterpret_cast<const char*>(data), size)));
  tandem::fuzz::expect_clean("weights", [&] {
    for (const tandem::NamedTensor& t : tandem::read_weights_file(path)) {
      int64_t n = 1;
      for (int64_t d : t.shape.dims) n *= d;
      if (n != static_cast<int64_t>(t.values.size())) std::abort();  // the shape describes the values
    }
  });
  return 0;
}

// --batching_parameters_file and a version directory's batching_params.pbtxt: text-format
// BatchingParameters through read_batching_parameters_file (parsed, TF Serving's defaults filled,
// validated). What it accepts must be usable: the padded size of every row count up to the
// maximum is allowed and holds the rows. The input is the file.
#include <cstdlib>

#include "fuzz_target.h"
#include "serve/batching.h"

TANDEM_FUZZ_TARGET(batching_params) {
  const std::string path = tandem::fuzz::scratch_file("batching.pbtxt", {reinterpret_cast<const char*>(data), size});
  tandem::fuzz::expect_clean("batching_params", [&] {
    const tandem::serve::BatchingOptions o = tandem::serve::read_batching_parameters_file(path, 2);
    if (o.max_batch_size < 1 || o.num_batch_threads < 1 || o.max_enqueued_batches < 1) std::abort();
    for (int64_t rows = 1; rows <= std::min<int64_t>(o.max_batch_size, 4096); ++rows) {
      const int64_t padded = o.padded_size(rows);
      if (padded < rows || padded > o.max_batch_size) std::abort();
    }
  });
  return 0;
}

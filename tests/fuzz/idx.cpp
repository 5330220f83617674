// The IDX reader (Fashion-MNIST's images and labels), plain or gzip-compressed: the input is the file.
#include "data/idx.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(idx) {
  const std::string path = tandem::fuzz::scratch_file("input.idx", {reinterpret_cast<const char*>(data), size});
  tandem::fuzz::expect_clean("idx", [&] {
    const tandem::IdxArray a = tandem::read_idx(path);
    size_t n = 1;
    for (uint32_t d : a.dims) n *= d;
    if (n != a.data.size()) std::abort();  // the reader's promise: the dims describe the data
  });
  return 0;
}

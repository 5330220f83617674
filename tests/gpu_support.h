// GPU test helpers: how many GPUs there are, skipping cleanly without one, and a gpu:N backend.
#pragma once
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/backend.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tandem::test {

inline int gpu_count() {
#ifdef TANDEM_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

// Without a GPU: "SKIPPED: no GPU", then exit 77 when this process was asked for one named test
// case (ctest runs each [gpu] case so, with SKIP_RETURN_CODE 77); in a run of many test cases,
// return false instead so that the others still run.
inline bool gpu_or_skip() {
  if (gpu_count() > 0) return true;
  std::printf("SKIPPED: no GPU\n");
  std::fflush(stdout);
  const auto& specs = Catch::getCurrentContext().getConfig()->getTestsOrTags();
  const bool single_named =
      specs.size() == 1 && specs[0].find('[') == std::string::npos && specs[0].find('*') == std::string::npos;
  if (single_named) std::exit(77);
  WARN("SKIPPED: no GPU");
  return false;
}

inline std::unique_ptr<Backend> make_gpu_backend(int index = 0) {
#ifdef TANDEM_HAVE_CUDA
  return make_cuda_backend(index);
#else
  (void)index;
  return nullptr;
#endif
}

}  // namespace tandem::test

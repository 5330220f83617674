#include "kernels/backends.h"

#include "engine/errors.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tandem {

bool cuda_available() {
#ifdef TANDEM_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const Device& device, int threads) {
  if (device.kind == DeviceKind::Cpu) return make_cpu_backend(threads);
#ifdef TANDEM_HAVE_CUDA
  return make_cuda_backend(device.index);
#else
  throw Error(ErrorKind::Device, "device " + device.str() + ": this build of Tandem has no CUDA support",
              "use --device cpu, or rebuild on a machine with the CUDA toolkit (TANDEM_CUDA=ON)");
#endif
}

}  // namespace tandem

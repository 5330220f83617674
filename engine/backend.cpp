#include "engine/backend.h"

#include "engine/errors.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tandem {

void Backend::dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in, int units,
                            float* y) {
  gemm(false, false, m, units, in, 1.f, x, in, w, units, 0.f, y, units);
  if (bias) bias_add(y, bias, m, units);
  if (relu) relu_forward(y, y, size_t(m) * units);
}

void Backend::conv2d_bias_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                                       bool relu, float* y) {
  conv2d_forward(g, x, w, y);
  const int64_t rows = int64_t(g.n) * g.oh * g.ow;
  if (bias) bias_add(y, bias, rows, g.k);
  if (relu) relu_forward(y, y, size_t(rows) * g.k);
}

void Backend::conv2d_bias_relu_backward(const ConvGeometry& g, const float* x, const float* y, float* dy,
                                        const float* w, bool relu, float* dw, float* db, float* dx) {
  const int64_t rows = int64_t(g.n) * g.oh * g.ow;
  if (relu) relu_backward(y, dy, dy, size_t(rows) * g.k);
  conv2d_backward_filter(g, x, dy, dw);
  if (db) bias_grad(dy, db, rows, g.k);
  if (dx) conv2d_backward_data(g, dy, w, dx);
}

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

// The forward-only CPU backend's oneDNN kernels (used in inference mode outside batch-invariant
// mode; oneDNN's JIT runs the widest vector unit the CPU has):
// - Conv2D forward (NHWC input and output, HWIO filters, bias and ReLU fused as post-ops):
//   Winograd F(4,3) for 3x3 stride-1 layers of two images or more (in oneDNN's blocked layout,
//   re-laid out on the way in and out), direct convolutions otherwise.
// - Dense forward (row-major x[m,in] times w[in,units], bias and ReLU as post-ops): oneDNN's inner
//   product for the batch's power-of-two chunks of 16 rows or more; the rows left over run as
//   one GEMM in the backend (dense_rows tells how many the inner product takes).
// Primitives are made on first use for power-of-two batch sizes and kept; a batch runs as its
// binary digits, so serving every size from 1 to 256 makes at most 9 per layer. The weights,
// re-laid out into a primitive's format, are kept too, keyed by their address: the backend calls
// weights_written() for every write that can reach the parameters, so weights overwritten in
// place (a new set_weights) are re-laid out on their next use.
#pragma once
#include <map>
#include <memory>
#include <tuple>

#include "engine/backend.h"

namespace tandem {

class OneDnnOps {
 public:
  OneDnnOps();
  ~OneDnnOps();
  void conv_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu, float* y,
                    int threads);
  // The leading rows of an m-row Dense forward that dense_forward computes (0: none).
  static int dense_rows(int m, int in, int units);
  // y[0..dense_rows(m)) of y = act(x w + bias).
  void dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in, int units, float* y,
                     int threads);
  // [p, p + bytes) was just written: drop every kept weight layout read from there.
  void weights_written(const void* p, size_t bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem

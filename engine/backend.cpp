#include "engine/backend.h"

#include "engine/errors.h"

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

}  // namespace tandem

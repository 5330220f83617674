// Conv2D forward (NHWC input and output, HWIO filters, bias and ReLU fused as post-ops) on oneDNN's
// direct convolutions, which run the widest vector unit the CPU has; one primitive per geometry,
// created on first use and kept. Used by the CPU backend outside batch-invariant mode.
#pragma once
#include <map>
#include <memory>
#include <tuple>

#include "engine/backend.h"

namespace tandem {

class OneDnnConv {
 public:
  OneDnnConv();
  ~OneDnnConv();
  void forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu, float* y,
               int threads);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem

// A named float32 tensor, as weights travel between the engine, the native weights file and the
// exporters; and the digest that says whether two sets of weights are bit-identical.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace tandem {

struct NamedTensor {
  std::string name;  // e.g. "dense_1/kernel"
  Shape shape;
  std::vector<float> values;  // float32, shape.numel() values
};

// One digest of all tensors (names, shapes and bytes): equal digests mean bit-identical weights.
std::string weights_digest(const std::vector<NamedTensor>& tensors);

}  // namespace tandem

// Gradient buckets: contiguous slices of the gradient arena at layer boundaries, last layer first
// (the order in which backward produces them), all-reduced in the same order on every rank by the
// host and NCCL gradient syncs (docs/ARCHITECTURE.md §7).
#pragma once
#include <cstddef>
#include <vector>

#include "engine/model.h"

namespace tandem {

struct Bucket {
  size_t begin = 0, end = 0;  // float offsets in the gradient arena
};

// Splits [0, trainable_floats) at layer boundaries into buckets of at least `bucket_bytes`,
// from the last layer backwards (the order in which backward produces them).
std::vector<Bucket> plan_buckets(const Model& model, size_t bucket_bytes);

}  // namespace tandem

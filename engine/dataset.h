// The in-memory labelled image dataset the trainer consumes (uint8, as stored; data/ loads it from
// files), and the per-epoch shuffle every rank and replica agrees on (docs/ARCHITECTURE.md §5).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace tandem {

struct Dataset {
  std::vector<uint8_t> images;  // count * sample_elems(), NHWC
  std::vector<uint8_t> labels;  // count
  Shape sample_shape;           // e.g. (28, 28, 1)
  int64_t count = 0;
  int num_classes = 10;
  int64_t sample_elems() const { return sample_shape.numel(); }
  Dataset slice(int64_t begin, int64_t end) const;  // samples [begin, end)
};

// The order in which epoch `epoch` visits `count` samples: a Fisher-Yates shuffle driven by
// (seed, epoch) alone, so it is the same on every rank and for every replica count.
std::vector<int32_t> epoch_permutation(int64_t count, uint64_t seed, uint64_t epoch);

}  // namespace tandem

#include "engine/dataset.h"

#include <limits>
#include <string>
#include <utility>

#include "engine/errors.h"
#include "engine/rng.h"

namespace tandem {

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > count)
    throw_invalid("Dataset::slice(" + std::to_string(begin) + ", " + std::to_string(end) + ") is out of range for " +
                      std::to_string(count) + " samples",
                  "use 0 <= begin <= end <= count");
  const int64_t elems = sample_elems();
  TANDEM_ASSERT(static_cast<int64_t>(images.size()) == count * elems && static_cast<int64_t>(labels.size()) == count);
  Dataset d;
  d.sample_shape = sample_shape;
  d.num_classes = num_classes;
  d.count = end - begin;
  d.images.assign(images.begin() + begin * elems, images.begin() + end * elems);
  d.labels.assign(labels.begin() + begin, labels.begin() + end);
  return d;
}

std::vector<int32_t> epoch_permutation(int64_t count, uint64_t seed, uint64_t epoch) {
  if (count < 0 || count > std::numeric_limits<int32_t>::max())
    throw_invalid("epoch_permutation: sample count " + std::to_string(count) + " is out of range",
                  "the count must be between 0 and 2^31 - 1");
  std::vector<int32_t> perm(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) perm[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  CounterRng rng(seed, epoch);
  for (int64_t i = count - 1; i > 0; --i) {
    const uint64_t j = rng.below(static_cast<uint64_t>(i) + 1);
    std::swap(perm[static_cast<size_t>(i)], perm[j]);
  }
  return perm;
}

}  // namespace tandem

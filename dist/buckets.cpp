#include "dist/buckets.h"

#include <algorithm>

namespace tandem {

std::vector<Bucket> plan_buckets(const Model& model, size_t bucket_bytes) {
  // Offsets where a layer's trainable parameters start, in arena order.
  std::vector<size_t> starts;
  int last_layer = -1;
  for (const auto& p : model.params())
    if (p.spec.trainable && p.layer != last_layer) {
      starts.push_back(p.offset);
      last_layer = p.layer;
    }
  std::sort(starts.begin(), starts.end());
  std::vector<Bucket> out;
  const size_t floats = std::max<size_t>(1, bucket_bytes / sizeof(float));
  size_t end = model.trainable_floats();
  for (size_t i = starts.size(); i-- > 0;) {
    if (end - starts[i] >= floats || i == 0) {
      out.push_back({i == 0 ? 0 : starts[i], end});
      end = i == 0 ? 0 : starts[i];
    }
  }
  if (out.empty() || out.back().begin != 0) out.push_back({0, end});
  out.erase(std::remove_if(out.begin(), out.end(), [](const Bucket& b) { return b.begin == b.end; }), out.end());
  return out;
}

}  // namespace tandem

#include "engine/named_tensor.h"

#include <cstdint>

namespace tandem {

// Digest: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over this byte stream,
// every integer as 8 bytes little-endian:
//   tensor count; then per tensor, in order: name byte length, name bytes, rank, each dim (int64),
//   value count, the values as little-endian float32 bytes.
// Printed as 16 lowercase hex digits. Bit-level: -0.0 != 0.0 and NaN payloads count.
std::string weights_digest(const std::vector<NamedTensor>& tensors) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](const void* data, size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  };
  auto mix_u64 = [&mix](uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    mix(b, 8);
  };
  mix_u64(tensors.size());
  for (const NamedTensor& t : tensors) {
    mix_u64(t.name.size());
    mix(t.name.data(), t.name.size());
    mix_u64(t.shape.rank());
    for (int64_t d : t.shape.dims) mix_u64(static_cast<uint64_t>(d));
    mix_u64(t.values.size());
    mix(t.values.data(), t.values.size() * sizeof(float));
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 0; i < 16; ++i) out[15 - i] = kHex[(h >> (4 * i)) & 0xf];
  return out;
}

}  // namespace tandem

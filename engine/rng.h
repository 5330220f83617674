// Counter-based random numbers (Philox4x32-10), one function for both backends, so that a dropout
// mask depends only on (seed, step, global sample index, element), never on replica or device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_HD __host__ __device__ __forceinline__
#else
#define TANDEM_HD inline
#endif

namespace tandem {

struct Philox4 {
  uint32_t v[4];
};

TANDEM_HD uint32_t philox_mulhi(uint32_t a, uint32_t b, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *lo = static_cast<uint32_t>(p);
  return static_cast<uint32_t>(p >> 32);
}

TANDEM_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t lo0, lo1;
    uint32_t hi0 = philox_mulhi(0xD2511F53u, c0, &lo0);
    uint32_t hi1 = philox_mulhi(0xCD9E8D57u, c2, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 bits of resolution.
TANDEM_HD float uniform_from_bits(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// The dropout decision for one element: true keeps it.
TANDEM_HD bool dropout_keep(uint64_t seed, uint64_t step, uint64_t sample, uint64_t element, float rate) {
  Philox4 r = philox4x32(static_cast<uint32_t>(element), static_cast<uint32_t>(sample), static_cast<uint32_t>(step),
                         static_cast<uint32_t>(step >> 32) ^ 0x64726F70u /* "drop" */, static_cast<uint32_t>(seed),
                         static_cast<uint32_t>(seed >> 32));
  return uniform_from_bits(r.v[0]) >= rate;
}

// Host-side stream of uniform floats from (seed, stream id), for weight init and shuffling.
class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  uint32_t next_u32() {
    if (idx_ == 4) {
      block_ = philox4x32(static_cast<uint32_t>(counter_), static_cast<uint32_t>(counter_ >> 32),
                          static_cast<uint32_t>(stream_), static_cast<uint32_t>(stream_ >> 32),
                          static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32));
      ++counter_;
      idx_ = 0;
    }
    return block_.v[idx_++];
  }
  float uniform() { return uniform_from_bits(next_u32()); }
  // Uniform integer in [0, n) without modulo bias.
  uint64_t below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
      uint64_t x = (static_cast<uint64_t>(next_u32()) << 32) | next_u32();
      if (x < limit) return x % n;
    }
  }
  uint64_t counter() const { return counter_; }

 private:
  uint64_t seed_, stream_;
  uint64_t counter_ = 0;
  Philox4 block_{};
  int idx_ = 4;
};

}  // namespace tandem

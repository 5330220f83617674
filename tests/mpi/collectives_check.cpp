// Run under mpirun by mpi_checks.py (invariance): Communicator::tree_all_reduce_sum must give, on
// every rank, exactly the bits of the pairwise tree over ranks (0+1, 2+3, then (0+1)+(2+3), ...)
// evaluated locally, for buffer sizes that do and do not divide by the rank count; the plain
// all_reduce_sum must agree with it to rounding. A rank count that is not a power of 2 must be
// refused with a clear error. Exit 0 when all hold.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "engine/errors.h"
#include "engine/rng.h"

using namespace tandem;

namespace {
std::vector<float> values_of(int rank, size_t n) {
  CounterRng rng(n * 7919 + 1, static_cast<uint64_t>(rank));
  std::vector<float> v(n);
  for (auto& x : v) x = 2.f * rng.uniform() - 1.f;
  return v;
}
}  // namespace

int main() {
  try {
    auto comm = make_mpi_communicator(true);
    const int p = comm->size(), me = comm->rank();
    if ((p & (p - 1)) != 0) {
      std::vector<float> v(4, 1.f);
      try {
        comm->tree_all_reduce_sum(v.data(), v.size());
      } catch (const Error& e) {
        const bool clear = std::string(e.what()).find("power-of-2") != std::string::npos;
        if (me == 0) std::printf("%s %d ranks refused: %s\n", clear ? "ok" : "FAIL", p, e.what());
        return clear ? 0 : 1;
      }
      std::printf("FAIL rank %d: %d ranks were not refused\n", me, p);
      return 1;
    }
    int failures = 0;
    for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(5), size_t(17), size_t(1000), size_t(65537)}) {
      std::vector<std::vector<float>> all;
      for (int r = 0; r < p; ++r) all.push_back(values_of(r, n));
      std::vector<float> got = all[static_cast<size_t>(me)];
      comm->tree_all_reduce_sum(got.data(), n);
      // The tree, locally: at distance d, group sums of d ranks are paired, lower + upper.
      for (int d = 1; d < p; d *= 2)
        for (int r = 0; r + d < p; r += 2 * d)
          for (size_t i = 0; i < n; ++i) all[r][i] += all[r + d][i];
      const std::vector<float>& want = all[0];
      size_t differ = 0;
      for (size_t i = 0; i < n; ++i) differ += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
      std::vector<float> plain = values_of(me, n);
      comm->all_reduce_sum(plain.data(), n);
      double worst = 0;
      for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(plain[i]) - want[i]));
      const bool ok = differ == 0 && worst <= 1e-5 * p;
      if (!ok) {
        std::printf("FAIL rank %d of %d, n=%zu: %zu elements differ from the local tree; plain sum off by %.3g\n", me, p,
                    n, differ, worst);
        ++failures;
      }
    }
    int total = 0;
    double f = failures;
    comm->all_reduce_sum(&f, 1);
    total = static_cast<int>(f);
    if (me == 0) std::printf("%s tree all-reduce over %d ranks (%s): %d failures\n", total ? "FAIL" : "ok", p,
                             comm->name().c_str(), total);
    return total ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

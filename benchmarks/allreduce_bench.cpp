// allreduce_bench: bus bandwidth of Tandem's bucketed gradient all-reduce (the path a training
// step takes: buckets of --bucket-mb reduced on the communication
// thread) against a raw MPI_Allreduce of the same buffer, as nccl-tests reports it:
// algbw = bytes / time, busbw = algbw * 2(n-1)/n. --tree measures the batch-invariant path
// (each bucket summed by Communicator::tree_all_reduce_sum, in a fixed tree over ranks).
// --sizes takes the buffer sizes in bytes (default 1, 4, 16 and 64 MiB; small sizes measure the
// per-message latency that benchmarks/scaling_model.py fits).
//   mpirun -np 2 build/benchmarks/allreduce_bench [--bucket-mb 25] [--iters 20] [--rounds 7] [--tree]
//                                                 [--sizes 4096,1048576,...]
// Started without mpirun, with TF_CONFIG or torchrun's variables per process (as `tandem train`
// reads them), it measures the Gloo communicator instead, and the raw column is one Gloo ring
// all-reduce of the whole buffer (Communicator::all_reduce_sum).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "engine/errors.h"

#ifdef TANDEM_HAVE_MPI
#include <mpi.h>

#include "dist/host_gradient_sync.h"
#include "dist/communicator.h"
#include "dist/launch_env.h"
#include "kernels/backends.h"

using namespace tandem;

int main(int argc, char** argv) {
  double bucket_mb = 25;
  int iters = 20, rounds = 7;
  bool tree = false;
  std::vector<size_t> sizes = {size_t(1) << 20, size_t(4) << 20, size_t(16) << 20, size_t(64) << 20};
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--tree")) {
      tree = true;
    } else if (has_value && !std::strcmp(argv[i], "--bucket-mb")) {
      bucket_mb = std::atof(argv[++i]);
    } else if (has_value && !std::strcmp(argv[i], "--iters")) {
      iters = std::atoi(argv[++i]);
    } else if (has_value && !std::strcmp(argv[i], "--rounds")) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (has_value && !std::strcmp(argv[i], "--sizes")) {
      sizes.clear();
      for (const char* p = argv[++i]; *p;) {
        char* end = nullptr;
        const unsigned long long v = std::strtoull(p, &end, 10);
        if (end == p || v < sizeof(float) || v % sizeof(float) != 0 || (*end != ',' && *end != '\0')) {
          std::fprintf(stderr, "allreduce_bench: --sizes wants byte counts that are multiples of 4, comma-separated\n");
          return 2;
        }
        sizes.push_back(static_cast<size_t>(v));
        p = *end ? end + 1 : end;
      }
      if (sizes.empty()) {
        std::fprintf(stderr, "allreduce_bench: --sizes is empty\n");
        return 2;
      }
    } else {
      std::fprintf(stderr,
                   "allreduce_bench: unknown argument '%s'\n"
                   "usage: allreduce_bench [--bucket-mb MIB] [--iters N] [--rounds N] [--tree] [--sizes B,B,...]\n",
                   argv[i]);
      return 2;
    }
  }
  try {
    std::optional<LaunchEnv> launch;
    if (!launched_by_mpi()) launch = launch_env_from_environment();
    auto comm = launch ? make_gloo_communicator(*launch, 300) : make_mpi_communicator(true);
    const bool mpi = !launch;
    const int n = comm->size();
    auto cpu = make_cpu_backend(1);
    if (comm->rank() == 0)
      std::printf("# %d ranks (%s%s), bucket %.0f MiB, median of %d rounds of %d iterations; busbw = algbw * 2(n-1)/n\n"
                  "%10s %12s %12s %12s %12s %8s\n",
                  n, comm->name().c_str(), tree ? ", tree all-reduce" : "", bucket_mb, rounds, iters, "bytes",
                  "tandem_us", "tandem_busbw", mpi ? "mpi_us" : "gloo_us", mpi ? "mpi_busbw" : "gloo_busbw", "ratio");
    for (size_t bytes : sizes) {
      const size_t floats = bytes / sizeof(float);
      std::vector<float> buf(floats, 1.0f);
      std::vector<Bucket> buckets;
      const size_t per = static_cast<size_t>(bucket_mb * 1048576.0 / sizeof(float));
      for (size_t end = floats; end > 0;) {
        size_t begin = end > per ? end - per : 0;
        buckets.push_back({begin, end});
        end = begin;
      }
      HostGradientSync sync(*comm, buckets, true, 300);
      sync.set_tree(tree);
      auto time_it = [&](auto&& fn) {
        fn();  // warm-up
        comm->barrier();
        auto t0 = std::chrono::steady_clock::now();
        for (int it = 0; it < iters; ++it) fn();
        comm->barrier();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      };
      // Alternate the two in rounds and keep each one's median: this VM's speed drifts between
      // runs by more than the difference being measured.
      uint64_t step = 0;
      std::vector<double> tandem_t, mpi_t;
      for (int round = 0; round < rounds; ++round) {
        tandem_t.push_back(time_it([&] {
          // As backward does: every bucket but the first layer's is handed to the communication
          // thread as it is finished, then the step waits for all of them.
          sync.begin_step(*cpu, buf.data(), floats, step++);
          for (size_t b = 0; b + 1 < buckets.size(); ++b) sync.layer_done(buckets[b].begin);
          sync.all_reduce_gradients(*cpu, buf.data(), floats);
        }));
        mpi_t.push_back(time_it([&] {
          if (mpi)
            MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(floats), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
          else
            comm->all_reduce_sum(buf.data(), floats);
        }));
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      const double t_tandem = median(tandem_t), t_mpi = median(mpi_t);
      auto busbw = [&](double t) { return double(bytes) / t * 2.0 * (n - 1) / n / 1e9; };
      if (comm->rank() == 0)
        std::printf("%10zu %12.1f %12.2f %12.1f %12.2f %8.3f\n", bytes, t_tandem * 1e6, busbw(t_tandem),
                    t_mpi * 1e6, busbw(t_mpi), t_mpi / t_tandem);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
#else
int main() {
  std::fprintf(stderr, "allreduce_bench needs a build with MPI (apt-get install libopenmpi-dev)\n");
  return 2;
}
#endif

#include <cstdlib>
#include <mutex>

#include "dist/communicator.h"
#include "dist/nccl_gradient_sync.h"
#include "engine/errors.h"
#include "engine/fp_env.h"

namespace tandem {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

#ifndef TANDEM_HAVE_MPI
bool mpi_available() { return false; }
std::unique_ptr<Communicator> make_mpi_communicator(bool) {
  throw_error(ErrorKind::Communication, "this build of Tandem has no MPI support",
              "install libopenmpi-dev and rebuild (tools/setup.sh), or use --strategy mirrored");
}
void mpi_abort_job_if_running(int) {}
int mpi_rank_if_running() { return -1; }
#endif

#ifndef TANDEM_HAVE_GLOO
bool gloo_available() { return false; }
std::unique_ptr<Communicator> make_gloo_communicator(const LaunchEnv&, double) {
  throw_error(ErrorKind::Communication, "this build of Tandem has no Gloo support, which jobs launched without MPI need",
              "install libgloo-dev and rebuild (tools/setup.sh), or launch with mpirun/srun");
}
#endif

namespace {
struct Job {
  std::mutex mu;
  int rank = -1;
  std::function<void(int)> abort;
};
Job& job() {
  static Job j;
  return j;
}
}  // namespace

void set_distributed_job(int rank, std::function<void(int)> abort) {
  std::lock_guard<std::mutex> lock(job().mu);
  job().rank = rank;
  job().abort = std::move(abort);
}

void abort_job_if_distributed(int status) {
  std::function<void(int)> abort;
  {
    std::lock_guard<std::mutex> lock(job().mu);
    abort = job().abort;
  }
  if (abort) abort(status);
  mpi_abort_job_if_running(status);
}

int distributed_rank() {
  {
    std::lock_guard<std::mutex> lock(job().mu);
    if (job().rank >= 0) return job().rank;
  }
  return mpi_rank_if_running();
}

template <typename T>
void tree_all_reduce_by_exchange(int rank, int size, T* data, size_t n, std::vector<T>& scratch,
                                 const TreeExchange<T>& exchange) {
  if (size == 1 || n == 0) return;
  if ((size & (size - 1)) != 0)
    throw_invalid("--batch-invariant needs a power-of-2 number of ranks, this job has " + std::to_string(size),
                  "launch 1, 2, 4, 8, ... ranks");
  enable_flush_to_zero();  // the adds below round like the compute threads' (denormals flushed)
  if (n * sizeof(T) <= kTreeDoublingBytes) {
    // Small buffers: recursive doubling, whole buffers, one message per level instead of two. At
    // distance d both partners form (lower group's sum) + (upper group's sum): the same tree, the
    // same bits, half the messages.
    scratch.resize(n);
    for (int d = 1; d < size; d <<= 1) {
      exchange(data, n, scratch.data(), n, rank ^ d);
      for (size_t i = 0; i < n; ++i) data[i] += scratch[i];  // IEEE addition commutes: the same bits on both
    }
    return;
  }
  struct Segment {
    size_t lo, hi;
  };
  std::vector<Segment> parents;
  size_t lo = 0, hi = n;
  for (int d = 1; d < size; d <<= 1) {
    const size_t mid = lo + (hi - lo) / 2;
    const bool lower = (rank & d) == 0;
    const size_t keep_lo = lower ? lo : mid, keep_hi = lower ? mid : hi;
    const size_t send_lo = lower ? mid : lo, send_hi = lower ? hi : mid;
    scratch.resize(keep_hi - keep_lo);
    exchange(data + send_lo, send_hi - send_lo, scratch.data(), keep_hi - keep_lo, rank ^ d);
    for (size_t i = keep_lo; i < keep_hi; ++i) data[i] += scratch[i - keep_lo];
    parents.push_back({lo, hi});
    lo = keep_lo;
    hi = keep_hi;
  }
  for (int d = size >> 1; d >= 1; d >>= 1) {
    const Segment parent = parents.back();
    parents.pop_back();
    const size_t mid = parent.lo + (parent.hi - parent.lo) / 2;
    const bool lower = (rank & d) == 0;
    const size_t other_lo = lower ? mid : parent.lo, other_hi = lower ? parent.hi : mid;
    exchange(data + lo, hi - lo, data + other_lo, other_hi - other_lo, rank ^ d);
    lo = parent.lo;
    hi = parent.hi;
  }
}

#ifndef TANDEM_HAVE_NCCL
namespace {
[[noreturn]] void no_nccl() {
  throw_error(ErrorKind::Communication, "this build of Tandem has no NCCL support",
              "build with CUDA and NCCL (tools/setup.sh finds them under /usr/local/cuda)");
}
}  // namespace
bool nccl_available() { return false; }
std::unique_ptr<GradientSync> make_nccl_gradient_sync(Communicator&, const Model&, Backend&, size_t, bool, double) {
  no_nccl();
}
std::unique_ptr<LocalReduce> make_nccl_local_reduce(const std::vector<Backend*>&) { no_nccl(); }
#endif

template void tree_all_reduce_by_exchange<float>(int, int, float*, size_t, std::vector<float>&,
                                                 const TreeExchange<float>&);
template void tree_all_reduce_by_exchange<double>(int, int, double*, size_t, std::vector<double>&,
                                                  const TreeExchange<double>&);

}  // namespace tandem

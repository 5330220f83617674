// Communicators: the collectives a data-parallel job needs, over host buffers. Implementations:
// MPI (flat), hierarchical MPI (reduce-scatter inside a node, all-reduce across nodes, all-gather
// inside the node — the NCCL+MPI algorithm with MPI standing in for NCCL), and, for GPUs, NCCL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tandem {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "mpi", "mpi-hierarchical", ...
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank within the node
  virtual int local_size() const = 0;
  virtual int nodes() const = 0;
  // In-place sum over all ranks; every rank ends with bit-identical values.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  // In-place sum over all ranks in a fixed pairwise tree of ranks (ranks 2i and 2i+1 first, then
  // pairs of pairs, ...), for batch invariance: every rank ends with the same bits, and they equal
  // that tree evaluated anywhere else (one process summing the same values in the same pairs).
  // Needs a power-of-2 number of ranks (else throws InvalidArgument).
  virtual void tree_all_reduce_sum(float* data, size_t n) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank contributes `bytes`; `out` receives size()*bytes in rank order.
  virtual void all_gather(const void* in, size_t bytes, void* out) = 0;
  virtual void barrier() = 0;
  // The two halves of the hierarchical algorithm, for device all-reduces that do the in-node part
  // themselves (NCCL): a broadcast from local rank 0 to its node, and an in-place sum over the
  // ranks with this rank's local rank on every node.
  virtual void node_broadcast(void* data, size_t bytes) = 0;
  virtual void cross_node_all_reduce_sum(float* data, size_t n) = 0;
  // The stall watchdog. Collectives are numbered as each rank enters them, and `note_step` labels
  // the ones that follow with a training step. Once `start_watchdog(timeout_s)` has run, a
  // collective that ranks have waited in for more than `timeout_s` makes rank 0 name the ranks
  // that have not reached it (the usual hang: a rank stuck or gone before a collective) and abort
  // the whole job. It costs a collective nothing: a background thread reports each rank's count
  // to rank 0 a few times a second.
  virtual void start_watchdog(double timeout_s) = 0;
  virtual void note_step(uint64_t step) = 0;
  // On rank 0 with the watchdog running: the ranks last heard of before `step` ("" if none, or
  // not known on this rank). For collectives the communicator does not run itself (NCCL).
  virtual std::string ranks_behind(uint64_t step) = 0;
  // Runs before the job is aborted by the watchdog or abort(), e.g. ncclCommAbort. One hook;
  // an empty function removes it.
  virtual void set_abort_hook(std::function<void()> hook) = 0;
  // Ends the whole job (all ranks) with `code`. Never returns.
  [[noreturn]] virtual void abort(int code) = 0;
};

// The MPI world, if this process was started by mpirun/srun (MPI is initialised on first use).
// Node-local ranks come from MPI_Comm_split_type(SHARED) unless TANDEM_RANKS_PER_NODE is set,
// which groups consecutive ranks into "nodes" of that size (to exercise the hierarchical path on
// one machine). `hierarchical`: use the two-level all-reduce when there are several nodes.
std::unique_ptr<Communicator> make_mpi_communicator(bool hierarchical);
bool mpi_available();      // compiled with MPI
bool gloo_available();     // compiled with Gloo (jobs launched without MPI: dist/launch_env.h)
bool launched_by_mpi();    // OMPI_COMM_WORLD_SIZE / PMI_SIZE / PMIX_RANK present in the environment
struct LaunchEnv;
// The job a launch without MPI describes (TF_CONFIG, torchrun): rank 0 serves the rendezvous, every
// rank registers, and the collectives run over Gloo's TCP transport. `timeout_s` bounds the
// rendezvous and is the stall watchdog's. Node-local ranks are the ranks on the same host name.
std::unique_ptr<Communicator> make_gloo_communicator(const LaunchEnv& env, double timeout_s);
// After a fatal error in a multi-process job: end every rank (MPI_Abort, or the rendezvous's abort)
// instead of leaving the others blocked in their next collective. No-op in a one-process job.
void abort_job_if_distributed(int status);
// This process's rank in a multi-process job, else -1 (for prefixing error messages).
int distributed_rank();
// MPI's part of the two above (dist/mpi_communicator.cpp; no-ops without MPI).
void mpi_abort_job_if_running(int status);
int mpi_rank_if_running();
// What a job launched without MPI registers for the two functions above (the Gloo communicator).
void set_distributed_job(int rank, std::function<void(int)> abort);

// The fixed pairwise tree of tree_all_reduce_sum over any point-to-point transport: recursive
// halving (a reduce-scatter) then recursive doubling (an all-gather), nearest partners first. After
// the exchange at distance d, each element this rank keeps is the sum over its aligned group of 2d
// ranks, formed as (lower d ranks' sum) + (upper d ranks' sum): the pairwise tree over ranks, at
// the bandwidth of a ring (each rank sends 2(p-1)/p of the buffer). With nodes made of consecutive
// ranks, the first exchanges stay inside a node. `exchange(send, send_n, recv, recv_n, peer)`
// sends and receives at once; `size` must be a power of 2 (else throws InvalidArgument). Buffers of
// at most kTreeDoublingBytes go by recursive doubling instead (whole buffers, one message per level,
// the same tree and bits). Defined for float and double.
constexpr size_t kTreeDoublingBytes = 16384;
template <typename T>
using TreeExchange = std::function<void(const T*, size_t, T*, size_t, int)>;
template <typename T>
void tree_all_reduce_by_exchange(int rank, int size, T* data, size_t n, std::vector<T>& scratch,
                                 const TreeExchange<T>& exchange);

}  // namespace tandem

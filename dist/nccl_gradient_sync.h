// The NCCL gradient sync, the GPU counterpart of dist/host_gradient_sync.h (docs/ARCHITECTURE.md
// §7). Declared everywhere; built only with CUDA and NCCL (dist/nccl_*.cpp), elsewhere the
// factories throw and nccl_available() is false.
#pragma once
#include <memory>
#include <vector>

#include "dist/buckets.h"
#include "dist/communicator.h"
#include "engine/trainer.h"

namespace tandem {

bool nccl_available();

// multi-worker on GPUs, one rank per GPU. The ncclUniqueId travels over `comm` (MPI or Gloo), which also
// carries the metrics and the start-up agreement. Gradient buckets are all-reduced on a
// communication stream as backward finishes them, each ordered after the compute stream's work by
// an event; the compute stream waits for the last one, so a step never blocks the host. With
// several nodes: NCCL reduce-scatter inside the node, MPI all-reduce of each rank's share across
// nodes (through pinned host memory), NCCL all-gather inside the node. The watchdog aborts the
// job (ncclCommAbort, then MPI_Abort) when a step's all-reduce is not done after `timeout_s`.
std::unique_ptr<GradientSync> make_nccl_gradient_sync(Communicator& comm, const Model& model, Backend& backend,
                                                      size_t bucket_bytes, bool overlap, double timeout_s);

// mirrored over several distinct GPUs in one process: one NCCL communicator per GPU from
// ncclCommInitAll; the all-reduce runs on the replicas' own streams.
std::unique_ptr<LocalReduce> make_nccl_local_reduce(const std::vector<Backend*>& backends);

}  // namespace tandem

#include <cstdlib>

#include "dist/communicator.h"
#include "dist/nccl_sync.h"
#include "engine/errors.h"

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
void abort_job_if_distributed(int) {}
int distributed_rank() { return -1; }
#endif

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

}  // namespace tandem

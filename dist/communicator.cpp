#include <cstdlib>

#include "dist/communicator.h"
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

}  // namespace tandem

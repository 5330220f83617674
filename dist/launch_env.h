// How a multi-worker job was launched when no MPI launcher started it: from TF_CONFIG (as
// tf.distribute.MultiWorkerMirroredStrategy and Kubeflow's TFJob set it) or from torchrun's variables
// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, as torchrun and PyTorchJob set them). Either way the
// job has a rank, a size and one rendezvous address, rank 0's, where every rank registers
// (dist/rendezvous.h). docs/ARCHITECTURE.md §12.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

struct LaunchEnv {
  std::string source;  // "TF_CONFIG" or "torchrun"
  int rank = 0;
  int size = 1;
  std::string rendezvous_host;  // rank 0's address: TF_CONFIG's chief (else worker 0), MASTER_ADDR
  int rendezvous_port = 0;
  // What every rank must have been started with (compared at the rendezvous): TF_CONFIG's cluster,
  // or the world size and master address.
  std::string cluster;
  // How a rank is named in messages: "chief 0 (h1:2222)", "worker 1 (h2:2222)", "RANK 3".
  std::vector<std::string> names;
};

// Parses TF_CONFIG's value. Throws Error(InvalidArgument) naming the field for JSON that is not a
// cluster Tandem can run: evaluator and ps tasks (Tandem has no parameter servers), a missing key,
// an index out of range, a malformed or duplicate address.
LaunchEnv parse_tf_config(const std::string& json);

// Reads torchrun's variables through `get` (nullptr: unset). Throws Error(InvalidArgument) naming the
// variable that is missing or malformed.
LaunchEnv parse_torchrun_env(const std::function<const char*(const char*)>& get);

// True when any of torchrun's variables is set.
bool torchrun_env_present(const std::function<const char*(const char*)>& get);

// The launch this process's environment describes: TF_CONFIG if set (it wins over torchrun's
// variables, and a note says so), else torchrun's variables, else nothing (a one-process job, or
// mpirun/srun: callers ask launched_by_mpi() first).
std::optional<LaunchEnv> launch_env_from_environment(std::string* note = nullptr);

}  // namespace tandem

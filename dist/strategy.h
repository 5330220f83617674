// Distribution strategies, as tf.distribute names them, built from one description of the run:
//   default / one-device  one replica on --device
//   mirrored              one replica per --devices entry in this process, gradients summed by NCCL
//                         (GPUs, when built with it) or on the host
//   central-storage       the same replicas, variables and the update kept on the host
//   multi-worker          one replica per rank, started by mpirun/srun or, without an MPI launcher, by
//                         TF_CONFIG or torchrun's variables (dist/launch_env.h); gradients all-reduced
//                         in buckets by NCCL (GPU replicas, when built with it), MPI or Gloo,
//                         overlapped with backward
// make_strategy validates the description, places the replicas (starting MPI for multi-worker) and
// chooses the collectives; connect() then builds the gradient sync for a model once every rank has
// agreed on the run's configuration. The trainer sees only backends(), sync() and local_reduce().
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/rank_agreement.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/trainer.h"

namespace tandem {

struct StrategySpec {
  std::string name = "default";  // default | one-device | mirrored | central-storage | multi-worker
  std::string device = "cpu";    // default and multi-worker (gpu: one GPU per local rank)
  std::string devices;           // mirrored and central-storage: "gpu:0,gpu:1", "cpu:0,cpu:1"
  int threads = 0;               // CPU threads in all (0: every core), shared by this process's replicas
  std::string precision = "fp32";  // fp32 | tf32 (GPUs)
  std::string communicator = "auto";  // auto | nccl | mpi | gloo
  double bucket_mb = 25;
  bool overlap = true;            // all-reduce buckets during backward
  double collective_timeout = 300;  // seconds (multi-worker's watchdog)
  int batch_invariant = 0;          // leaves; > 0 selects MPI's fixed tree all-reduce
};

class Strategy {
 public:
  ~Strategy();
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;

  const std::vector<Backend*>& backends() const { return backend_ptrs_; }
  Communicator* communicator() const { return comm_.get(); }  // multi-worker only
  bool is_chief() const { return !comm_ || comm_->rank() == 0; }  // the process that writes files
  bool central_storage() const { return spec_.name == "central-storage"; }
  bool gpu() const { return gpu_; }                     // every replica on a GPU
  const std::string& collectives() const { return collectives_; }  // "nccl", "mpi", "gloo" or "host"

  // Multi-worker: starts the watchdog, checks that every rank read the same `inputs` (naming the
  // host whose copy of a file differs) and runs `config` (the run's identity; the strategy adds its
  // own keys), then builds the gradient sync. Mirrored: builds the local reduce. Prints one line
  // saying how gradients travel (rank 0).
  void connect(const Model& model, nlohmann::json config, const std::vector<InputDigest>& inputs);
  GradientSync* sync() const { return sync_.get(); }
  LocalReduce* local_reduce() const { return local_reduce_.get(); }
  // Central storage: the one-thread CPU backend that holds the weights and runs the update (else null).
  Backend* host_backend() const { return host_.get(); }

 private:
  friend std::unique_ptr<Strategy> make_strategy(const StrategySpec& spec);
  explicit Strategy(StrategySpec spec);

  StrategySpec spec_;
  std::unique_ptr<Communicator> comm_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<Backend*> backend_ptrs_;
  bool gpu_ = false;
  std::string collectives_;
  std::unique_ptr<GradientSync> sync_;
  std::unique_ptr<LocalReduce> local_reduce_;
  std::unique_ptr<Backend> host_;
};

// Throws Error(InvalidArgument) naming the flag for a description that cannot run.
std::unique_ptr<Strategy> make_strategy(const StrategySpec& spec);

// The cores this process may use (1 if unknown): the default CPU thread count.
int hardware_threads();

// "gpu:0,gpu:1" -> devices; refuses empty entries and duplicates.
std::vector<Device> parse_devices(const std::string& list);

}  // namespace tandem

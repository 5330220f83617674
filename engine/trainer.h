// Trainer: fit / evaluate / predict over one or more replicas with global-batch semantics
// (docs/ARCHITECTURE.md §4): the global batch is split into contiguous slices, the loss is divided by the
// global batch size, gradients are summed over replicas, and every replica applies one identical
// update.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/callback.h"
#include "engine/dataset.h"
#include "engine/inference.h"
#include "engine/optimizer.h"
#include "engine/replica.h"

namespace tandem {

// Sums the gradient arena of the local replica 0 across processes (dist/ implements it). After
// all_reduce_gradients every process holds the same sum. Between begin_step and
// all_reduce_gradients, layer_done reports backward's progress so buckets can be sent early.
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual int world_size() const = 0;  // processes
  virtual int rank() const = 0;
  virtual void begin_step(Backend& backend, float* grads, size_t n, uint64_t step) {}
  // Gradients at offsets >= first_final_offset are final for this step.
  virtual void layer_done(size_t first_final_offset) {}
  virtual void all_reduce_gradients(Backend& backend, float* grads, size_t n) = 0;
  // Sums a small buffer over processes in place (BatchNormalization's moving statistics, which
  // the Trainer then averages); after all_reduce_gradients, on the same backend.
  virtual void all_reduce_state(Backend& backend, float* state, size_t n) = 0;
  virtual void all_reduce_metrics(double* values, int count) = 0;  // host doubles, summed
  // Throws Error(Communication) naming the ranks whose `value` differs from rank 0's (e.g. a
  // digest of the weights, or of the run's configuration).
  virtual void require_agreement(const std::string& what, const std::string& value) = 0;
};

// Sums the gradient arenas of one process's replicas in place, every replica ending with the same
// bits (NCCL across the process's GPUs). Without one, GPU replicas are summed through the host.
class LocalReduce {
 public:
  virtual ~LocalReduce() = default;
  virtual void all_reduce(const std::vector<Backend*>& backends, const std::vector<float*>& grads, size_t n) = 0;
};

struct TrainOptions {
  int epochs = 10;
  int64_t batch_size = 32;  // global
  uint64_t seed = 42;
  bool one_hot = false;
  // Central storage: the weights and optimizer live on this host (CPU) backend; replica gradients
  // are summed there, the update is applied there and the weights are copied back to every
  // replica. Null: off. (Strategy::host_backend() provides it for --strategy central-storage.)
  Backend* central_storage = nullptr;
  int64_t check_replicas_every = 0;  // steps; 0 = only at the end of fit (when > 0 was asked)
  bool check_replicas = false;
  // CUDA Graphs: capture a full-batch training step once and replay it (one GPU replica, one
  // process, no central storage); other configurations and backends run eagerly.
  bool cuda_graphs = true;
  // Batch invariance (--batch-invariant LEAVES; 0 = off): every global batch is cut into LEAVES
  // equal micro-batches, each replica runs its contiguous share of them one after another, and all
  // gradients are summed in one fixed pairwise tree over the leaves (inside a replica, across local
  // replicas, across ranks). With the backends' batch-invariant mode the final weights are then
  // bit-identical for every replica count dividing LEAVES and every thread count.
  int leaves = 0;
  void validate(int replicas) const;  // throws InvalidArgument
};

struct EpochLog {
  int epoch = 0;  // 1-based
  double loss = 0, accuracy = 0;
  double val_loss = 0, val_accuracy = 0;
  bool has_val = false;
  double seconds = 0;
  int64_t steps = 0, samples = 0;
  double learning_rate = 0;
};

// The state after one optimizer step, the same on every process: the epoch's running metrics over
// all replicas (summed over processes).
struct BatchLog {
  int epoch = 0;              // 1-based
  int64_t step = 0, steps = 0;  // 1-based step in the epoch, and the epoch's steps
  int64_t global_step = 0;    // optimizer updates applied
  double loss = 0, accuracy = 0;  // means over the epoch's samples so far
};

// Everything needed to continue training exactly where it stood. Shuffling and dropout are
// counter-based (seed, epoch, step), so positions are the whole random state.
struct TrainerState {
  int64_t step = 0;        // optimizer updates applied
  int epoch = 0;           // epochs completed
  int64_t epoch_step = 0;  // steps done in the current epoch
  double epoch_loss_sum = 0, epoch_correct = 0, epoch_seconds = 0;  // the current epoch so far
  std::vector<float> params;               // the whole arena
  std::vector<std::vector<float>> slots;   // optimizer slots (momentum, or Adam's m and v)
  std::vector<EpochLog> history;
};

class Trainer {
 public:
  // `backends`: one per local replica. `sync` may be null (one process).
  Trainer(const Model& model, std::vector<Backend*> backends, const TrainOptions& options,
          const OptimizerConfig& optimizer, GradientSync* sync = nullptr);
  ~Trainer();

  int replicas_total() const;
  // Trains from the current position until `options.epochs` epochs are done or a callback sets
  // stop_training, calling `callbacks` (not owned) in order at each point of engine/callback.h.
  std::vector<EpochLog> fit(const Dataset& train, const Dataset* validation,
                            const std::vector<Callback*>& callbacks);
  EvalResult evaluate(const Dataset& data);
  // Class probabilities for the first `count` samples, row-major [count, classes].
  std::vector<float> predict(const Dataset& data, int64_t count);

  std::vector<float> weights();  // replica 0's arena, on the host
  void set_weights(const std::vector<float>& arena);
  // Multiplies the optimizer's scheduled rate by `factor` from the next update on (every replica).
  void set_learning_rate_factor(double factor);
  double learning_rate_factor() const { return opt_config_.lr_factor; }
  // Mirrored replicas on several GPUs: sum their gradients with `reduce` (not owned).
  void set_local_reduce(LocalReduce* reduce) { local_reduce_ = reduce; }
  // Digests of every local replica's weights (bit-identity check).
  std::vector<std::string> replica_digests();

  // Snapshot (collective in a multi-process job: metric sums are combined) and restore.
  TrainerState state();
  void restore(const TrainerState& state);

  // Set by a callback to end fit after the current epoch (Keras's model.stop_training); set in
  // on_train_begin, no epoch runs.
  bool stop_training = false;
  int rank() const { return sync_ ? sync_->rank() : 0; }  // this process's
  int64_t global_step() const { return step_; }
  int epoch() const { return epoch_; }
  const std::vector<EpochLog>& history() const { return history_; }

 private:

  const Model& model_;
  std::vector<Backend*> backends_;
  TrainOptions options_;
  OptimizerConfig opt_config_;
  GradientSync* sync_;
  LocalReduce* local_reduce_ = nullptr;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<std::unique_ptr<Optimizer>> optimizers_;
  // Central storage (and staging for device replicas): host arenas and the host optimizer.
  Backend* host_ = nullptr;  // TrainOptions::central_storage
  std::vector<float> host_params_, host_grads_;
  std::vector<std::vector<float>> staged_;  // replicas' buffers downloaded for a host sum
  bool all_host_ = true;                    // every local replica's memory is host memory
  // Downloads `count` floats at offset `at` of each local replica's `arena` (grads() or
  // params()), sums them on the host in the replica tree, and leaves the sum in `out`.
  void host_tree_sum(float* (Replica::*arena)(), size_t at, size_t count, std::vector<float>& out);
  std::unique_ptr<Optimizer> host_optimizer_;
  void reduce_and_update();
  void average_state();  // the replicas' non-trainable state averaged (TensorFlow's ON_READ MEAN)
  void check_replicas();
  void local_metric_sums(double* sums);  // {loss sum, correct} over this process's replicas
  int64_t step_ = 0;
  int epoch_ = 0;
  int64_t epoch_step_ = 0;
  double resumed_sums_[2] = {0, 0};
  double resumed_seconds_ = 0;
  std::chrono::steady_clock::time_point epoch_start_;
  std::vector<EpochLog> history_;
};

}  // namespace tandem

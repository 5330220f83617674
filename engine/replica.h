// One replica: a model's layers bound to one Backend, with its parameter and gradient arenas,
// activations and scratch planned once for the largest batch (no allocation inside a step).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "engine/model.h"

namespace tandem {

// A dataset made resident in a backend's memory (uploaded once; aliased on the CPU backend).
struct ResidentData {
  const uint8_t* images = nullptr;
  const uint8_t* labels = nullptr;
  int64_t count = 0, sample_elems = 0;
  int num_classes = 0;
};

class Replica {
 public:
  Replica(const Model& model, Backend& backend, int64_t max_batch);
  ~Replica();
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  Backend& backend() { return backend_; }
  const Model& model() const { return model_; }
  int64_t max_batch() const { return max_batch_; }
  float* params() { return params_; }
  float* grads() { return grads_; }
  void set_weights(const std::vector<float>& arena);
  std::vector<float> weights();

  // Gathers samples index[0..rows) of `data` into the input (normalised) and the targets.
  void load_batch(const ResidentData& data, const int32_t* host_index, int64_t rows, bool one_hot);
  // Copies `rows` host inputs, already normalised (x / 255, as the exported graphs take them), into
  // the input (inference: a served request's rows).
  void load_input(const float* host, int64_t rows);
  // Forward over the loaded batch; returns the output (logits, or probabilities if want_probs).
  const float* forward(const StepContext& ctx);
  // Loss and metrics of the last forward; when `backward`, also d(loss)/d(logits) * grad_scale.
  void loss(int64_t rows, float grad_scale, bool one_hot, bool backward);
  // Backward pass from the stored d(loss)/d(logits); writes every trainable gradient. After each
  // layer, `on_layer_done(offset)` says that gradients at arena offsets >= offset are final.
  void backward(const StepContext& ctx, const std::function<void(size_t)>& on_layer_done = nullptr);

  // Batch invariance (--batch-invariant): the replica's share of a global batch runs as `leaves`
  // micro-batches (a power of 2), whose gradients are summed in a fixed pairwise tree (leaves 2i
  // and 2i+1 first, then pairs of pairs). After leaf j's backward has written grads() over
  // [lo, hi), fold_leaf(j, lo, hi) folds that range into the tree; after the last leaf grads()
  // holds the sum. Leaves must be folded in order 0, 1, ..., each range once per leaf.
  void set_leaves(int leaves);
  int leaves() const { return leaves_; }
  void fold_leaf(int leaf, size_t lo, size_t hi);
  // The non-trainable state (BatchNormalization's moving statistics) goes through the same tree:
  // begin_leaf(j) before leaf j's forward starts it from the state the step began with, and
  // fold_state(j) after it folds the leaf's updated state in (the Trainer then averages).
  void begin_leaf(int leaf);
  void fold_state(int leaf);

  // metrics[0] = summed loss, metrics[1] = correct predictions since the last reset.
  void reset_metrics();
  void read_metrics(double* loss_sum, double* correct);
  void set_metrics(double loss_sum, double correct);

 private:
  float* alloc_floats(size_t n);
  const Model& model_;
  Backend& backend_;
  int64_t max_batch_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<void*> owned_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  float* input_ = nullptr;
  std::vector<float*> acts_;
  std::vector<size_t> grad_start_;  // per layer: lowest arena offset of its trainable params
  int leaves_ = 1;
  std::vector<float*> tree_;  // tree_[level]: a left subtree's sum waiting for its right sibling
                              // (gradients at [0, trainable), then the state)
  float* step_state_ = nullptr;  // the non-trainable state as the step began
  void fold(int leaf, float* live, size_t tree_offset, size_t count);
  float* grad_a_ = nullptr;
  float* grad_b_ = nullptr;
  int32_t* index_ = nullptr;
  int32_t* labels_ = nullptr;
  float* onehot_ = nullptr;
  static constexpr size_t kMetricDoubles = 4;  // the loss kernels' accumulators (metrics[0..1] used)
  double* metrics_ = nullptr;
};

}  // namespace tandem

#include "engine/replica.h"

#include <algorithm>
#include <cstdint>

#include "engine/errors.h"

namespace tandem {

float* Replica::alloc_floats(size_t n) {
  void* p = backend_.allocate(sizeof(float) * std::max<size_t>(n, 1));
  owned_.push_back(p);
  return static_cast<float*>(p);
}

Replica::Replica(const Model& model, Backend& backend, int64_t max_batch)
    : model_(model), backend_(backend), max_batch_(max_batch) {
  TANDEM_ASSERT(max_batch > 0);
  layers_ = model.instantiate();
  params_ = alloc_floats(model.arena_floats());
  grads_ = alloc_floats(model.trainable_floats());
  backend_.fill(params_, model.arena_floats(), 0.f);
  backend_.fill(grads_, model.trainable_floats(), 0.f);
  const size_t in_elems = static_cast<size_t>(model.input_shape().numel());
  input_ = alloc_floats(max_batch * in_elems);
  size_t widest = in_elems;
  for (auto& l : layers_) {
    size_t out = static_cast<size_t>(l->output_shape().numel());
    widest = std::max(widest, out);
    acts_.push_back(alloc_floats(max_batch * out));
  }
  grad_a_ = alloc_floats(max_batch * widest);
  grad_b_ = alloc_floats(max_batch * widest);
  const int classes = model.num_classes();
  index_ = static_cast<int32_t*>(static_cast<void*>(alloc_floats(max_batch)));
  labels_ = static_cast<int32_t*>(static_cast<void*>(alloc_floats(max_batch)));
  onehot_ = alloc_floats(max_batch * classes);
  metrics_ = static_cast<double*>(static_cast<void*>(alloc_floats(kMetricDoubles * sizeof(double) / sizeof(float))));
  reset_metrics();

  // Bind each layer's parameter and gradient views into the arenas.
  std::vector<std::vector<float*>> p(layers_.size()), g(layers_.size());
  for (size_t li = 0; li < layers_.size(); ++li) {
    size_t count = layers_[li]->param_specs().size();
    p[li].resize(count);
    g[li].resize(count);
  }
  grad_start_.assign(layers_.size(), SIZE_MAX);
  for (const auto& slot : model.params()) {
    if (slot.spec.trainable) grad_start_[slot.layer] = std::min(grad_start_[slot.layer], slot.offset);
    p[slot.layer][slot.index] = params_ + slot.offset;
    g[slot.layer][slot.index] = slot.spec.trainable ? grads_ + slot.offset : nullptr;
  }
  for (size_t li = 0; li < layers_.size(); ++li) {
    size_t s = layers_[li]->scratch_floats(max_batch);
    layers_[li]->bind(p[li], g[li], s ? alloc_floats(s) : nullptr);
  }
}

Replica::~Replica() {
  for (void* p : owned_) backend_.deallocate(p);
}

void Replica::set_weights(const std::vector<float>& arena) {
  TANDEM_ASSERT(arena.size() == model_.arena_floats());
  backend_.upload(params_, arena.data(), sizeof(float) * arena.size());
}

std::vector<float> Replica::weights() {
  std::vector<float> arena(model_.arena_floats());
  backend_.download(arena.data(), params_, sizeof(float) * arena.size());
  return arena;
}

void Replica::load_batch(const ResidentData& data, const int32_t* host_index, int64_t rows, bool one_hot) {
  TANDEM_ASSERT(rows <= max_batch_);
  if (rows == 0) return;
  backend_.upload(index_, host_index, sizeof(int32_t) * rows);
  backend_.gather_batch(data.images, data.labels, index_, rows, data.sample_elems, data.num_classes, input_, labels_,
                        one_hot ? onehot_ : nullptr);
}

void Replica::load_input(const float* host, int64_t rows) {
  TANDEM_ASSERT(rows <= max_batch_);
  if (rows == 0) return;
  backend_.upload(input_, host, sizeof(float) * static_cast<size_t>(rows * model_.input_shape().numel()));
}

const float* Replica::forward(const StepContext& ctx) {
  TANDEM_ASSERT(ctx.batch <= max_batch_);
  const float* x = input_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (ctx.batch > 0) layers_[i]->forward(ctx, x, acts_[i]);
    x = acts_[i];
  }
  return x;
}

void Replica::loss(int64_t rows, float grad_scale, bool one_hot, bool backward) {
  if (rows == 0) return;
  backend_.softmax_cross_entropy(acts_.back(), labels_, one_hot ? onehot_ : nullptr, rows, model_.num_classes(),
                                 grad_scale, backward ? grad_a_ : nullptr, metrics_);
}

void Replica::backward(const StepContext& ctx, const std::function<void(size_t)>& on_layer_done) {
  if (ctx.batch == 0) {
    // An empty slice of a short last batch: this replica contributes zero gradients.
    backend_.fill(grads_, model_.trainable_floats(), 0.f);
    return;
  }
  // Below the first layer with trainable parameters no gradient is needed: that layer computes
  // no input gradient (for mlp, Flatten then Dense: the 784-wide input gradient GEMM is skipped),
  // and the layers under it do not run backward at all.
  size_t first = layers_.size();
  for (size_t i = 0; i < layers_.size() && first == layers_.size(); ++i)
    if (grad_start_[i] != SIZE_MAX) first = i;
  float* dy = grad_a_;
  float* dx = grad_b_;
  for (size_t i = layers_.size(); i-- > first;) {
    const float* x = i == 0 ? input_ : acts_[i - 1];
    layers_[i]->backward(ctx, x, acts_[i], dy, i == first ? nullptr : dx);
    if (on_layer_done && grad_start_[i] != SIZE_MAX) on_layer_done(grad_start_[i]);
    std::swap(dy, dx);
  }
}

void Replica::set_leaves(int leaves) {
  TANDEM_ASSERT(leaves >= 1 && (leaves & (leaves - 1)) == 0);
  leaves_ = leaves;
  while ((size_t(1) << tree_.size()) < size_t(leaves)) tree_.push_back(alloc_floats(model_.arena_floats()));
  const size_t state = model_.arena_floats() - model_.trainable_floats();
  if (leaves > 1 && state > 0 && !step_state_) step_state_ = alloc_floats(state);
}

void Replica::fold(int leaf, float* live, size_t tree_offset, size_t count) {
  TANDEM_ASSERT(leaf >= 0 && leaf < leaves_ && tree_offset + count <= model_.arena_floats());
  if (count == 0) return;
  // A binary counter over the leaves: at each level a left child waits in tree_[level]; a right
  // child is added to it (x + y == y + x in IEEE arithmetic, so only the pairing matters) and the
  // sum climbs a level. The last leaf climbs to the top, leaving the whole sum in `live`.
  for (size_t level = 0; (size_t(1) << level) < size_t(leaves_); ++level) {
    if (((leaf >> level) & 1) == 0) {
      backend_.copy(tree_[level] + tree_offset, live, sizeof(float) * count);
      return;
    }
    backend_.add(live, tree_[level] + tree_offset, count);
  }
}

void Replica::fold_leaf(int leaf, size_t lo, size_t hi) {
  TANDEM_ASSERT(lo <= hi && hi <= model_.trainable_floats());
  fold(leaf, grads_ + lo, lo, hi - lo);
}

void Replica::begin_leaf(int leaf) {
  const size_t t = model_.trainable_floats(), state = model_.arena_floats() - t;
  if (!step_state_ || state == 0) return;
  if (leaf == 0)
    backend_.copy(step_state_, params_ + t, sizeof(float) * state);
  else
    backend_.copy(params_ + t, step_state_, sizeof(float) * state);
}

void Replica::fold_state(int leaf) {
  const size_t t = model_.trainable_floats();
  fold(leaf, params_ + t, t, model_.arena_floats() - t);
}

void Replica::reset_metrics() { set_metrics(0, 0); }

void Replica::set_metrics(double loss_sum, double correct) {
  double m[kMetricDoubles] = {loss_sum, correct, 0, 0};
  backend_.upload(metrics_, m, sizeof(m));
}

void Replica::read_metrics(double* loss_sum, double* correct) {
  double m[kMetricDoubles];
  backend_.download(m, metrics_, sizeof(m));
  *loss_sum = m[0];
  *correct = m[1];
}

}  // namespace tandem

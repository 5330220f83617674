#include "engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "engine/errors.h"
#include "engine/trace.h"

namespace tandem {

void TrainOptions::validate(int replicas) const {
  if (epochs < 0) throw_invalid("--epochs must be at least 0, got " + std::to_string(epochs), "e.g. --epochs 10");
  if (batch_size <= 0) throw_invalid("--batch-size must be positive, got " + std::to_string(batch_size), "e.g. --batch-size 32");
  if (batch_size > (1 << 20)) throw_invalid("--batch-size " + std::to_string(batch_size) + " is too large");
  if (batch_size % replicas != 0)
    throw_invalid("global batch size " + std::to_string(batch_size) + " does not split evenly over " +
                      std::to_string(replicas) + " replicas",
                  "choose a --batch-size that is a multiple of " + std::to_string(replicas));
  if (leaves < 0 || leaves > 65536 || (leaves & (leaves - 1)) != 0)
    throw_invalid("--batch-invariant must be a power of 2 (the number of leaves), got " + std::to_string(leaves),
                  "e.g. --batch-invariant 8: the same weights for 1, 2, 4 or 8 replicas");
  if (leaves > 0 && leaves % replicas != 0)
    throw_invalid("--batch-invariant " + std::to_string(leaves) + " leaves do not split evenly over " +
                      std::to_string(replicas) + " replicas",
                  (replicas & (replicas - 1)) == 0
                      ? "use --batch-invariant " + std::to_string(replicas) + " or more (a power of 2)"
                      : std::string("the replica count must be a power of 2 (1, 2, 4, 8, ...)"));
  if (leaves > 0 && batch_size % leaves != 0)
    throw_invalid("global batch size " + std::to_string(batch_size) + " does not split into " +
                      std::to_string(leaves) + " leaves",
                  "choose a --batch-size that is a multiple of " + std::to_string(leaves));
}

Trainer::Trainer(const Model& model, std::vector<Backend*> backends, const TrainOptions& options,
                 const OptimizerConfig& optimizer, GradientSync* sync)
    : model_(model), backends_(std::move(backends)), options_(options), opt_config_(optimizer), sync_(sync) {
  TANDEM_ASSERT(!backends_.empty());
  options_.validate(replicas_total());
  opt_config_.validate();
  // The largest batch one forward pass sees: a replica's share, or one leaf.
  const int64_t per_replica = options_.batch_size / (options_.leaves > 0 ? options_.leaves : replicas_total());
  const std::vector<float> init = model.initial_weights(options_.seed);
  if (options_.central_storage && sync_)
    throw_invalid("central-storage runs in one process", "use --strategy multi-worker under mpirun");
  for (Backend* b : backends_) {
    all_host_ = all_host_ && b->device().kind == DeviceKind::Cpu;
    if (options_.leaves > 0) b->set_batch_invariant(true);
    replicas_.push_back(std::make_unique<Replica>(model, *b, per_replica));
    replicas_.back()->set_weights(init);
    if (options_.leaves > 0) replicas_.back()->set_leaves(options_.leaves / replicas_total());
    if (!options_.central_storage)
      optimizers_.push_back(std::make_unique<Optimizer>(opt_config_, *b, model.trainable_floats()));
  }
  if (options_.central_storage) {
    if (options_.central_storage->device().kind != DeviceKind::Cpu)
      throw_invalid("central storage keeps the weights and the update on the host, not on " +
                        options_.central_storage->device().str(),
                    "give TrainOptions::central_storage a CPU backend (the strategy provides one)");
    host_ = options_.central_storage;
    host_params_ = init;
    host_grads_.assign(model.trainable_floats(), 0.f);
    host_optimizer_ = std::make_unique<Optimizer>(opt_config_, *host_, model.trainable_floats());
  }
}

namespace {
// The order in which local gradient arenas are summed: a fixed pairwise tree (0+1, 2+3, then
// (0+1)+(2+3), ...), whatever the timing, and the same tree that one replica's leaves and the
// ranks' all-reduce use, so that batch-invariant runs agree bit for bit. sum(a, b) does a += b.
template <class Sum>
void tree_over_replicas(int count, const Sum& sum) {
  for (int d = 1; d < count; d *= 2)
    for (int l = 0; l + d < count; l += 2 * d) sum(l, l + d);
}
}  // namespace

void Trainer::host_tree_sum(float* (Replica::*arena)(), size_t at, size_t count, std::vector<float>& out) {
  const int local = static_cast<int>(replicas_.size());
  staged_.resize(static_cast<size_t>(local));
  for (int l = 0; l < local; ++l) {
    Replica& rep = *replicas_[l];
    staged_[l].resize(count);
    rep.backend().download(staged_[l].data(), (rep.*arena)() + at, count * sizeof(float));
  }
  tree_over_replicas(local, [&](int a, int b) {
    float* x = staged_[a].data();
    const float* y = staged_[b].data();
    for (size_t i = 0; i < count; ++i) x[i] += y[i];
  });
  out.swap(staged_[0]);
}

// Sums the replicas' gradients, then applies one identical update everywhere.
void Trainer::reduce_and_update() {
  const size_t n = model_.trainable_floats();
  const int local = static_cast<int>(replicas_.size());
  if (options_.central_storage) {
    trace::Span span("host update");
    host_tree_sum(&Replica::grads, 0, n, host_grads_);
    host_optimizer_->apply(host_params_.data(), host_grads_.data(), step_);
    for (auto& rep : replicas_) rep->backend().upload(rep->params(), host_params_.data(), n * sizeof(float));
    return;
  }
  Replica& r0 = *replicas_[0];
  const bool device_reduce =
      local > 1 && !all_host_ && local_reduce_ != nullptr && sync_ == nullptr && options_.leaves == 0;
  std::optional<trace::Span> local_span;
  if (local > 1) local_span.emplace("local reduce");
  if (device_reduce) {
    std::vector<Backend*> backends;
    std::vector<float*> grads;
    for (auto& rep : replicas_) {
      backends.push_back(&rep->backend());
      grads.push_back(rep->grads());
    }
    local_reduce_->all_reduce(backends, grads, n);
  } else if (local > 1 && all_host_) {
    tree_over_replicas(local, [&](int a, int b) { replicas_[a]->backend().add(replicas_[a]->grads(), replicas_[b]->grads(), n); });
  } else if (local > 1) {
    // Replicas on several devices without a device-to-device path: stage through the host.
    host_tree_sum(&Replica::grads, 0, n, host_grads_);
    r0.backend().upload(r0.grads(), host_grads_.data(), n * sizeof(float));
  }
  local_span.reset();
  if (sync_) {
    trace::Span span("allreduce wait");
    sync_->all_reduce_gradients(r0.backend(), r0.grads(), n);
  }
  trace::Span span("optimizer");
  for (int l = 0; l < local; ++l) {
    Replica& rep = *replicas_[l];
    if (l > 0 && !device_reduce) {
      if (all_host_)
        rep.backend().copy(rep.grads(), r0.grads(), sizeof(float) * n);
      else
        rep.backend().upload(rep.grads(), host_grads_.data(), sizeof(float) * n);
    }
    optimizers_[l]->apply(rep.params(), rep.grads(), step_);
  }
}

void Trainer::average_state() {
  const size_t t = model_.trainable_floats(), count = model_.arena_floats() - t;
  // Each replica holds the sum of its leaves' updated states (one leaf per replica without leaves).
  const int parts = options_.leaves > 0 ? options_.leaves : replicas_total();
  if (count == 0 || parts == 1) return;
  trace::Span span("state sync");
  const int local = static_cast<int>(replicas_.size());
  Replica& r0 = *replicas_[0];
  if (all_host_) {
    tree_over_replicas(local, [&](int a, int b) {
      replicas_[a]->backend().add(replicas_[a]->params() + t, replicas_[b]->params() + t, count);
    });
  } else if (local > 1) {
    std::vector<float> sum;
    host_tree_sum(&Replica::params, t, count, sum);
    r0.backend().upload(r0.params() + t, sum.data(), count * sizeof(float));
  }
  if (sync_) sync_->all_reduce_state(r0.backend(), r0.params() + t, count);
  r0.backend().scale(r0.params() + t, count, 1.0f / static_cast<float>(parts));
  if (local == 1 && !options_.central_storage) return;
  std::vector<float> host(count);
  r0.backend().download(host.data(), r0.params() + t, count * sizeof(float));
  for (int l = 1; l < local; ++l)
    replicas_[l]->backend().upload(replicas_[l]->params() + t, host.data(), count * sizeof(float));
  if (options_.central_storage)
    std::copy(host.begin(), host.end(), host_params_.begin() + static_cast<std::ptrdiff_t>(t));
}

void Trainer::local_metric_sums(double* sums) {
  sums[0] = sums[1] = 0;
  for (auto& r : replicas_) {
    double loss_sum, correct;
    r->read_metrics(&loss_sum, &correct);
    sums[0] += loss_sum;
    sums[1] += correct;
  }
}

void Trainer::check_replicas() {
  auto digests = replica_digests();
  for (size_t l = 1; l < digests.size(); ++l)
    if (digests[l] != digests[0])
      throw Error(ErrorKind::Internal,
                  "replica " + std::to_string(l) + " has different weights from replica 0 at step " +
                      std::to_string(step_),
                  "the replicas diverged; please report this as a bug");
  if (sync_) sync_->require_agreement("the weights at step " + std::to_string(step_), digests[0]);
}

Trainer::~Trainer() = default;

void Trainer::set_learning_rate_factor(double factor) {
  opt_config_.lr_factor = factor;
  for (auto& o : optimizers_) o->set_lr_factor(factor);
  if (host_optimizer_) host_optimizer_->set_lr_factor(factor);
}

int Trainer::replicas_total() const {
  return static_cast<int>(backends_.size()) * (sync_ ? sync_->world_size() : 1);
}

namespace {
struct Span {
  int64_t begin, rows;
};
// Replica g's contiguous slice of a global batch of b samples over n replicas.
Span replica_slice(int64_t b, int n, int g) {
  int64_t lo = b * g / n, hi = b * (g + 1) / n;
  return {lo, hi - lo};
}
}  // namespace

std::vector<EpochLog> Trainer::fit(const Dataset& train, const Dataset* validation,
                                   const std::vector<Callback*>& callbacks) {
  stop_training = false;
  for (Callback* c : callbacks) c->set_trainer(this);
  for (Callback* c : callbacks) c->on_train_begin();
  if (train.sample_shape != model_.input_shape())
    throw_invalid("the data's samples have shape " + train.sample_shape.str() + " but model '" + model_.name() +
                  "' expects " + model_.input_shape().str());
  if (train.num_classes != model_.num_classes())
    throw_invalid("the data has " + std::to_string(train.num_classes) + " classes but model '" + model_.name() +
                      "' outputs " + std::to_string(model_.num_classes()),
                  "give the last layer \"units\": " + std::to_string(train.num_classes));
  if (train.count == 0) throw_invalid("the training set is empty");
  std::vector<std::unique_ptr<ResidentDataset>> data;
  for (Backend* b : backends_) data.push_back(std::make_unique<ResidentDataset>(*b, train));

  const int64_t B = options_.batch_size;
  const int64_t steps = (train.count + B - 1) / B;
  const int n = replicas_total();
  const int rank = sync_ ? sync_->rank() : 0;
  const int local = static_cast<int>(replicas_.size());
  const size_t grad_n = model_.trainable_floats();
  const bool graphs =
      options_.cuda_graphs && local == 1 && !sync_ && !options_.central_storage && options_.leaves == 0;
  // Captured steps hold the addresses of this fit's buffers (the resident data among them).
  struct DropGraphs {
    Backend* backend;
    ~DropGraphs() {
      if (backend) backend->drop_step_graphs();
    }
  } drop_graphs{graphs ? &replicas_[0]->backend() : nullptr};
  if (graphs) replicas_[0]->backend().drop_step_graphs();
  using clock = std::chrono::steady_clock;
  std::vector<EpochLog> logs;
  // A checkpoint from the epoch's last batch (epoch_step_ == steps) resumes at its end: validation and the log.
  if (epoch_step_ > steps) throw_invalid("the checkpoint's position in the epoch is past its end", "resume with the same data and batch size");

  while (epoch_ < options_.epochs && !stop_training) {  // a callback may stop it before the first epoch
    epoch_start_ = clock::now();
    for (Callback* c : callbacks) c->on_epoch_begin(epoch_ + 1, options_.epochs, steps);
    const std::vector<int32_t> order = epoch_permutation(train.count, options_.seed, static_cast<uint64_t>(epoch_));
    for (auto& r : replicas_) r->reset_metrics();
    if (epoch_step_ > 0 && rank == 0) replicas_[0]->set_metrics(resumed_sums_[0], resumed_sums_[1]);
    EpochLog log;
    log.epoch = epoch_ + 1;
    log.learning_rate = opt_config_.learning_rate(step_ - epoch_step_);
    for (int64_t s = epoch_step_; s < steps; ++s) {
      const int64_t begin = s * B, b = std::min(B, train.count - begin);
      Backend& graph_backend = replicas_[0]->backend();
      trace::Span step_span("step", step_);
      const bool graph = graphs && graph_backend.begin_step_graph(static_cast<uint64_t>(b));
      try {
        if (sync_)
          sync_->begin_step(replicas_[0]->backend(), replicas_[0]->grads(), grad_n, static_cast<uint64_t>(step_));
        for (int l = 0; l < local; ++l) {
          Replica& rep = *replicas_[l];
          const int g = rank * local + l;  // this replica's place among all replicas
          const int leaves = rep.leaves();
          // Buckets leave while backward continues (one replica per process), during the last leaf.
          const bool overlap = sync_ && local == 1;
          for (int j = 0; j < leaves; ++j) {
            // Without leaves: replica g's slice of the batch. With them: leaf g*leaves+j of them all,
            // the slices being unions of whole leaves.
            const Span sl = options_.leaves > 0 ? replica_slice(b, options_.leaves, g * leaves + j)
                                                : replica_slice(b, n, g);
            {
              trace::Span span("data");
              rep.load_batch(data[l]->data, order.data() + begin + sl.begin, sl.rows, options_.one_hot);
            }
            StepContext ctx;
            ctx.backend = &rep.backend();
            ctx.batch = sl.rows;
            ctx.training = true;
            ctx.seed = options_.seed;
            ctx.step = static_cast<uint64_t>(step_);
            ctx.first_sample = static_cast<uint64_t>(sl.begin);
            if (leaves > 1) rep.begin_leaf(j);
            {
              trace::Span span("forward");
              rep.forward(ctx);
              if (leaves > 1) rep.fold_state(j);
              rep.loss(sl.rows, 1.0f / static_cast<float>(b), options_.one_hot, true);
            }
            const bool last = j + 1 == leaves;
            trace::Span span("backward");
            if (leaves == 1 && !overlap) {
              rep.backward(ctx);
              continue;
            }
            size_t folded = grad_n;  // gradients at offsets >= folded are folded into the tree
            rep.backward(ctx, [&](size_t offset) {
              if (leaves > 1) rep.fold_leaf(j, offset, folded);
              folded = offset;
              if (overlap && last) sync_->layer_done(offset);
            });
            if (leaves > 1) rep.fold_leaf(j, 0, folded);  // the rest (an empty leaf's zeros)
          }
        }
        reduce_and_update();
        average_state();
      } catch (...) {
        if (graph) graph_backend.abandon_step_graph();
        throw;
      }
      if (graph) graph_backend.end_step_graph();
      ++step_;
      epoch_step_ = s + 1;
      if (options_.check_replicas_every > 0 && step_ % options_.check_replicas_every == 0) check_replicas();
      if (!callbacks.empty()) {
        trace::Span span("callbacks");
        double m[2];
        local_metric_sums(m);
        if (sync_) sync_->all_reduce_metrics(m, 2);  // a NaN anywhere is a NaN everywhere
        BatchLog batch;
        batch.epoch = epoch_ + 1;
        batch.step = s + 1;
        batch.steps = steps;
        batch.global_step = step_;
        const double seen = double(std::min(train.count, (s + 1) * B));
        batch.loss = m[0] / seen;
        batch.accuracy = m[1] / seen;
        for (Callback* c : callbacks) c->on_batch_end(batch);
      }
    }
    double sums[2];
    local_metric_sums(sums);
    if (sync_) sync_->all_reduce_metrics(sums, 2);
    log.loss = sums[0] / double(train.count);
    log.accuracy = sums[1] / double(train.count);
    log.steps = steps;
    log.samples = train.count;
    log.seconds = resumed_seconds_ + std::chrono::duration<double>(clock::now() - epoch_start_).count();
    resumed_seconds_ = 0;
    if (validation && validation->count > 0) {
      EvalResult v = evaluate(*validation);
      log.val_loss = v.loss;
      log.val_accuracy = v.accuracy;
      log.has_val = true;
    }
    if (options_.check_replicas) check_replicas();
    history_.push_back(log);
    logs.push_back(log);
    ++epoch_;
    epoch_step_ = 0;
    for (Callback* c : callbacks) c->on_epoch_end(log);
    if (stop_training) break;
  }
  for (Callback* c : callbacks) c->on_train_end();
  return logs;
}

TrainerState Trainer::state() {
  TrainerState st;
  st.step = step_;
  st.epoch = epoch_;
  st.epoch_step = epoch_step_;
  double sums[2] = {0, 0};
  if (epoch_step_ > 0) local_metric_sums(sums);
  if (sync_) sync_->all_reduce_metrics(sums, 2);
  st.epoch_loss_sum = sums[0];
  st.epoch_correct = sums[1];
  st.epoch_seconds =
      epoch_step_ > 0
          ? resumed_seconds_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count()
          : 0;
  st.params = options_.central_storage ? host_params_ : replicas_[0]->weights();
  Optimizer& opt = options_.central_storage ? *host_optimizer_ : *optimizers_[0];
  Backend& be = options_.central_storage ? *host_ : replicas_[0]->backend();
  for (float* slot : opt.slots()) {
    std::vector<float> v(opt.size());
    be.download(v.data(), slot, v.size() * sizeof(float));
    st.slots.push_back(std::move(v));
  }
  st.history = history_;
  return st;
}

void Trainer::restore(const TrainerState& st) {
  if (st.params.size() != model_.arena_floats())
    throw_data("checkpoint holds " + std::to_string(st.params.size()) + " parameters, the model has " +
               std::to_string(model_.arena_floats()));
  Optimizer& first = options_.central_storage ? *host_optimizer_ : *optimizers_[0];
  if (st.slots.size() != first.slots().size())
    throw_data("checkpoint holds " + std::to_string(st.slots.size()) + " optimizer slots, optimizer '" +
                   opt_config_.name + "' needs " + std::to_string(first.slots().size()),
               "resume with the optimizer the run was started with");
  for (const auto& s : st.slots)
    if (s.size() != first.size()) throw_data("checkpoint optimizer slot has the wrong size");
  step_ = st.step;
  epoch_ = st.epoch;
  epoch_step_ = st.epoch_step;
  resumed_sums_[0] = st.epoch_loss_sum;
  resumed_sums_[1] = st.epoch_correct;
  resumed_seconds_ = st.epoch_seconds;
  history_ = st.history;
  set_weights(st.params);
  auto load_slots = [&](Optimizer& opt, Backend& be) {
    for (size_t i = 0; i < st.slots.size(); ++i)
      be.upload(opt.slots()[i], st.slots[i].data(), st.slots[i].size() * sizeof(float));
  };
  if (options_.central_storage) {
    host_params_ = st.params;
    load_slots(*host_optimizer_, *host_);
  } else {
    for (size_t l = 0; l < replicas_.size(); ++l) load_slots(*optimizers_[l], replicas_[l]->backend());
  }
}

EvalResult Trainer::evaluate(const Dataset& data) {
  // Evaluation batches are dealt round-robin over processes; the sums are combined.
  double sums[2];
  evaluation_sums(*replicas_[0], data, options_.one_hot, sync_ ? sync_->world_size() : 1, sync_ ? sync_->rank() : 0,
                  sums);
  if (sync_) sync_->all_reduce_metrics(sums, 2);
  return eval_result(sums, data.count);
}

std::vector<float> Trainer::predict(const Dataset& data, int64_t count) {
  return predicted_probabilities(*replicas_[0], data, count);
}

std::vector<float> Trainer::weights() { return replicas_[0]->weights(); }

void Trainer::set_weights(const std::vector<float>& arena) {
  for (auto& r : replicas_) r->set_weights(arena);
}

std::vector<std::string> Trainer::replica_digests() {
  std::vector<std::string> out;
  for (auto& r : replicas_) out.push_back(weights_digest(model_.to_tensors(r->weights())));
  return out;
}

}  // namespace tandem

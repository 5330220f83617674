#include "serve/servable.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "engine/errors.h"
#include "storage/loaded_model.h"
#include "kernels/backends.h"

namespace tandem::serve {

namespace {
// A replica needs a compute thread of its own: more forward passes at once than threads would
// only take turns on the cores.
int replicas_for(const ServableOptions& o) {
  const int wanted = o.batching ? o.batch.num_batch_threads : o.replicas;
  return std::max(1, std::min(wanted, std::max(1, o.threads)));
}

// Deletes a servable, then hands the freed heap back to the kernel. glibc keeps freed memory in its
// arenas (one per thread that allocated; the weights and activations of a version are allocated by
// the loading thread and the batch workers), so without the trim every hot swap left the old
// version's pages resident (TF Serving #1664 is the same effect).
void delete_and_trim(Servable* s) {
  delete s;
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}
}  // namespace

Servable::Servable(std::string name, int64_t version, Model model, const ServableOptions& options)
    : name_(std::move(name)), version_(version), model_(std::move(model)), options_(options) {}

Servable::~Servable() {
  batch_.reset();  // no batch runs after this
  for (Slot& slot : slots_) {
    slot.replica.reset();  // frees the replica's device memory before its backend goes
    slot.backend.reset();
  }
  if (on_destroy_) on_destroy_();
}

std::shared_ptr<Servable> Servable::load(const std::string& name, int64_t version, const std::string& dir,
                                         const ServableOptions& options, std::function<void()> on_destroy) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.max_batch <= 0) throw_invalid("the largest batch must be positive");
  for (const char* file : {kModelJsonName, kWeightsFileName})
    if (!std::filesystem::exists(std::filesystem::path(dir) / file))
      throw_data("version directory '" + dir + "' has no " + file,
                 "a servable version holds model.json and weights.tdw, as 'tandem export' writes them");
  if (options.replicas < 1) throw_invalid("a version needs at least one replica");
  LoadedModel loaded = load_model(dir);
  ServableOptions o = options;
  if (o.batching && o.per_model_batching) {
    const std::filesystem::path params = std::filesystem::path(dir) / kBatchingParamsFileName;
    if (std::filesystem::exists(params)) o.batch = read_batching_parameters_file(params.string(), o.cores);
  }
  // With batching no forward pass is larger than max_batch_size: plan the activations for that.
  if (o.batching) o.max_batch = std::min(o.max_batch, o.batch.max_batch_size);
  const int replicas = replicas_for(o);
  std::shared_ptr<Servable> s(new Servable(name, version, std::move(loaded.model), o), delete_and_trim);
  const Device device = Device::parse(o.device);
  for (int i = 0; i < replicas; ++i) {
    Slot slot;
    slot.backend = make_backend(device, std::max(1, o.threads / replicas));
    slot.backend->set_inference_only(true);
    slot.replica = std::make_unique<Replica>(s->model_, *slot.backend, o.max_batch);
    slot.replica->set_weights(loaded.arena);
    s->slots_.push_back(std::move(slot));
  }
  // Warm-up: the largest and the smallest batch touch every planned buffer and the backend's
  // per-shape state (cuDNN algorithm choice, thread pool start), before the first request does.
  // With batching, also at every allowed batch size (each runs as chunks of at most max_batch).
  std::vector<int64_t> sizes{o.max_batch, 1};
  if (o.batching)
    for (int64_t b : o.batch.allowed_batch_sizes) sizes.push_back(b);
  int64_t largest = 0;
  for (int64_t b : sizes) largest = std::max(largest, b);
  std::vector<float> in(static_cast<size_t>(largest * s->row_elems()), 0.5f);
  std::vector<float> out(static_cast<size_t>(largest * s->num_classes()));
  for (Slot& slot : s->slots_)
    for (int64_t rows : sizes) s->forward(slot, in.data(), rows, out.data());
  for (size_t i = replicas; i-- > 0;) s->free_.push_back(i);
  if (o.batching) {
    Servable* self = s.get();
    std::function<void(const BatchStats&)> observe;
    if (o.on_batch) observe = [self, cb = o.on_batch](const BatchStats& st) { cb(self->name(), self->version(), st); };
    BatchingOptions batch = o.batch;
    batch.num_batch_threads = replicas;  // one batch thread per replica: a formed batch never waits for one
    s->batch_ = std::make_unique<BatchQueue>(
        batch, s->row_elems(), s->num_classes(),
        [self](const float* x, int64_t rows, float* y) { self->predict(x, rows, y); }, std::move(observe));
  }
  s->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s->on_destroy_ = std::move(on_destroy);
  return s;
}

void Servable::forward(Slot& slot, const float* inputs, int64_t rows, float* out) {
  const int64_t in_row = row_elems(), out_row = num_classes();
  for (int64_t begin = 0; begin < rows; begin += options_.max_batch)
    forward_chunk(slot, inputs + begin * in_row, std::min(options_.max_batch, rows - begin), out + begin * out_row);
}

void Servable::forward_chunk(Slot& slot, const float* inputs, int64_t rows, float* out) {
  slot.replica->load_input(inputs, rows);
  StepContext ctx;
  ctx.backend = slot.backend.get();
  ctx.batch = rows;
  ctx.training = false;
  ctx.want_probs = true;
  const float* probs = slot.replica->forward(ctx);
  slot.backend->download(out, probs, sizeof(float) * static_cast<size_t>(rows * num_classes()));
}

void Servable::infer(const float* inputs, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline) {
  if (batch_) return batch_->run(inputs, rows, out, deadline);
  if (!predict(inputs, rows, out, deadline))
    fail(Code::DEADLINE_EXCEEDED, "Deadline exceeded while the request waited for its turn to compute");
}

bool Servable::predict(const float* inputs, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline) {
  size_t taken;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto any_free = [this] { return !free_.empty(); };
    if (deadline == std::chrono::steady_clock::time_point::max()) {
      free_cv_.wait(lock, any_free);
    } else if (!free_cv_.wait_until(lock, deadline, any_free)) {
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    taken = free_.back();
    free_.pop_back();
  }
  struct Release {  // gives the replica back, also when the forward pass throws
    Servable* s;
    size_t slot;
    ~Release() {
      {
        std::lock_guard<std::mutex> lock(s->mu_);
        s->free_.push_back(slot);
      }
      s->free_cv_.notify_one();
    }
  } release{this, taken};
  forward(slots_[taken], inputs, rows, out);
  return true;
}

}  // namespace tandem::serve

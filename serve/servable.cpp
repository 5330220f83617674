#include "serve/servable.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "engine/errors.h"
#include "export/loaded_model.h"

namespace tandem::serve {

Servable::Servable(std::string name, int64_t version, Model model, const ServableOptions& options)
    : name_(std::move(name)), version_(version), model_(std::move(model)), options_(options) {}

Servable::~Servable() {
  batch_.reset();    // no batch runs after this
  replica_.reset();  // frees the replica's device memory before its backend goes
  backend_.reset();
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
  LoadedModel loaded = load_model(dir);
  std::shared_ptr<Servable> s(new Servable(name, version, std::move(loaded.model), options));
  s->backend_ = make_backend(Device::parse(options.device), std::max(1, options.threads));
  s->backend_->set_inference_only(true);
  s->replica_ = std::make_unique<Replica>(s->model_, *s->backend_, options.max_batch);
  s->replica_->set_weights(loaded.arena);
  // Warm-up: the largest and the smallest batch touch every planned buffer and the backend's
  // per-shape state (cuDNN algorithm choice, thread pool start), before the first request does.
  // With batching, also at every allowed batch size (each runs as chunks of at most max_batch).
  std::vector<int64_t> sizes{options.max_batch, 1};
  if (options.batching)
    for (int64_t b : options.batch.allowed_batch_sizes) sizes.push_back(b);
  int64_t largest = 0;
  for (int64_t b : sizes) largest = std::max(largest, b);
  std::vector<float> in(static_cast<size_t>(largest * s->row_elems()), 0.5f);
  std::vector<float> out(static_cast<size_t>(largest * s->num_classes()));
  for (int64_t rows : sizes) s->predict(in.data(), rows, out.data());
  if (options.batching) {
    Servable* self = s.get();
    std::function<void(const BatchStats&)> observe;
    if (options.on_batch)
      observe = [self, cb = options.on_batch](const BatchStats& st) { cb(self->name(), self->version(), st); };
    s->batch_ = std::make_unique<BatchQueue>(
        options.batch, s->row_elems(), s->num_classes(),
        [self](const float* x, int64_t rows, float* y) { self->predict(x, rows, y); }, std::move(observe));
  }
  s->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s->on_destroy_ = std::move(on_destroy);
  return s;
}

void Servable::forward_chunk(const float* inputs, int64_t rows, float* out) {
  replica_->load_input(inputs, rows);
  StepContext ctx;
  ctx.backend = backend_.get();
  ctx.batch = rows;
  ctx.training = false;
  ctx.want_probs = true;
  const float* probs = replica_->forward(ctx);
  backend_->download(out, probs, sizeof(float) * static_cast<size_t>(rows * num_classes()));
}

void Servable::infer(const float* inputs, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline) {
  if (batch_) return batch_->run(inputs, rows, out, deadline);
  if (!predict(inputs, rows, out, deadline))
    fail(Code::DEADLINE_EXCEEDED, "Deadline exceeded while the request waited for its turn to compute");
}

bool Servable::predict(const float* inputs, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  if (std::chrono::steady_clock::now() >= deadline) return false;
  const int64_t in_row = row_elems(), out_row = num_classes();
  for (int64_t begin = 0; begin < rows; begin += options_.max_batch) {
    const int64_t n = std::min(options_.max_batch, rows - begin);
    forward_chunk(inputs + begin * in_row, n, out + begin * out_row);
  }
  return true;
}

}  // namespace tandem::serve

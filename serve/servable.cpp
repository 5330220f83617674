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
  s->replica_ = std::make_unique<Replica>(s->model_, *s->backend_, options.max_batch);
  s->replica_->set_weights(loaded.arena);
  // Warm-up: the largest and the smallest batch touch every planned buffer and the backend's
  // per-shape state (cuDNN algorithm choice, thread pool start), before the first request does.
  std::vector<float> in(static_cast<size_t>(options.max_batch * s->row_elems()), 0.5f);
  std::vector<float> out(static_cast<size_t>(options.max_batch * s->num_classes()));
  for (int64_t rows : {options.max_batch, int64_t{1}}) s->forward_chunk(in.data(), rows, out.data());
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

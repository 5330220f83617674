#include "engine/optimizer.h"

#include <cmath>

#include "engine/errors.h"

namespace tandem {

void OptimizerConfig::validate() const {
  if (name != "sgd" && name != "adam")
    throw_invalid("unknown optimizer '" + name + "'", "use --optimizer sgd or --optimizer adam");
  if (!(lr > 0) || !std::isfinite(lr)) throw_invalid("learning rate must be positive, got " + std::to_string(lr), "e.g. --lr 0.01");
  if (!(momentum >= 0 && momentum < 1)) throw_invalid("momentum must be in [0, 1), got " + std::to_string(momentum));
  if (nesterov && momentum == 0) throw_invalid("Nesterov momentum needs --momentum > 0");
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) throw_invalid("Adam betas must be in [0, 1)");
  if (!(epsilon > 0)) throw_invalid("Adam epsilon must be positive");
  if (schedule.type != "none" && schedule.type != "exponential" && schedule.type != "step")
    throw_invalid("unknown learning-rate schedule '" + schedule.type + "'", "use none, exponential or step");
  if (schedule.type != "none") {
    if (!(schedule.decay_rate > 0 && schedule.decay_rate <= 1))
      throw_invalid("learning-rate decay rate must be in (0, 1], got " + std::to_string(schedule.decay_rate));
    if (schedule.decay_steps <= 0) throw_invalid("learning-rate decay steps must be positive");
  }
}

double OptimizerConfig::learning_rate(int64_t step) const {
  if (schedule.type == "exponential")
    return lr_factor * lr * std::pow(schedule.decay_rate, double(step) / double(schedule.decay_steps));
  if (schedule.type == "step")
    return lr_factor * lr * std::pow(schedule.decay_rate, double(step / schedule.decay_steps));
  return lr_factor * lr;
}

Optimizer::Optimizer(const OptimizerConfig& config, Backend& backend, size_t n)
    : config_(config), backend_(backend), n_(n) {
  config_.validate();
  int slots = config_.name == "adam" ? 2 : (config_.momentum > 0 ? 1 : 0);
  for (int i = 0; i < slots; ++i) {
    float* s = static_cast<float*>(backend_.allocate(sizeof(float) * n));
    backend_.fill(s, n, 0.f);
    slots_.push_back(s);
  }
}

Optimizer::~Optimizer() {
  for (float* s : slots_) backend_.deallocate(s);
}

void Optimizer::apply(float* w, const float* g, int64_t step) {
  const float lr = static_cast<float>(config_.learning_rate(step));
  if (config_.name == "adam") {
    AdamParams p;
    p.lr = lr;
    p.beta1 = static_cast<float>(config_.beta1);
    p.beta2 = static_cast<float>(config_.beta2);
    p.epsilon = static_cast<float>(config_.epsilon);
    p.step = step + 1;
    backend_.adam_update(p, w, g, slots_[0], slots_[1], n_);
  } else {
    SgdParams p;
    p.lr = lr;
    p.momentum = static_cast<float>(config_.momentum);
    p.nesterov = config_.nesterov;
    backend_.sgd_update(p, w, g, slots_.empty() ? nullptr : slots_[0], n_);
  }
}

}  // namespace tandem

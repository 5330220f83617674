// Optimizers over the whole parameter arena in one launch (docs/ARCHITECTURE.md §2), with Keras's update
// rules, and learning-rate schedules.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace tandem {

struct ScheduleConfig {
  std::string type = "none";  // none | exponential | step
  double decay_rate = 1.0;    // multiply the rate by this ...
  int64_t decay_steps = 1;    // ... every decay_steps updates (continuously for exponential)
};

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | adam
  double lr = 0.01;
  double momentum = 0.0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7;
  ScheduleConfig schedule;
  double lr_factor = 1.0;  // multiplies the schedule's rate (set during training by ReduceLROnPlateau)
  void validate() const;  // throws InvalidArgument
  double learning_rate(int64_t step) const;  // the rate used for update number `step` (0-based)
};

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, Backend& backend, size_t n);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of w[0..n) from g; `step` counts updates already applied (0 for the first).
  void apply(float* w, const float* g, int64_t step);
  const OptimizerConfig& config() const { return config_; }
  void set_lr_factor(double factor) { config_.lr_factor = factor; }
  // Slot buffers (velocity, or Adam's m and v), each n floats in backend memory.
  const std::vector<float*>& slots() const { return slots_; }
  size_t size() const { return n_; }

 private:
  OptimizerConfig config_;
  Backend& backend_;
  size_t n_;
  std::vector<float*> slots_;
};

}  // namespace tandem

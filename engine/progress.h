// Keras-style progress output: "Epoch n/N", a bar with the step count, time, ms/step and the
// running metrics; one line per epoch when stdout is not a terminal.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "engine/trainer.h"

namespace tandem {

class KerasProgress {
 public:
  explicit KerasProgress(std::FILE* out, bool interactive);
  void epoch_begin(int epoch, int epochs, int64_t steps);
  void step(int64_t step, int64_t steps, double loss, double accuracy);
  void epoch_end(const EpochLog& log);
  TrainCallbacks callbacks();  // wires the three hooks above

 private:
  std::string bar(int64_t step, int64_t steps) const;
  std::FILE* out_;
  bool interactive_;
  int64_t steps_ = 0;
  std::chrono::steady_clock::time_point start_;
};

std::string format_metric(double v);  // "%.4f", or "%.4e" for tiny values, as Keras

}  // namespace tandem

// ProgressBar: Keras-style progress output: "Epoch n/N", a bar with the step count, time, ms/step
// and the running metrics; one line per epoch when stdout is not a terminal. Rank 0's only.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "engine/callback.h"

namespace tandem {

class ProgressBar : public Callback {
 public:
  ProgressBar(std::FILE* out, bool interactive);
  void on_epoch_begin(int epoch, int epochs, int64_t steps) override;
  void on_batch_end(const BatchLog& log) override;  // redrawn at most every 100 ms
  void on_epoch_end(const EpochLog& log) override;

 private:
  std::string bar(int64_t step, int64_t steps) const;
  std::FILE* out_;
  bool interactive_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_metric(double v);  // "%.4f", or "%.4e" for tiny values, as Keras

}  // namespace tandem

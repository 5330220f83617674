#include "engine/progress.h"

#include <cmath>

namespace tandem {

std::string format_metric(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), (std::fabs(v) > 1e-3 || v == 0) ? "%.4f" : "%.4e", v);
  return buf;
}

KerasProgress::KerasProgress(std::FILE* out, bool interactive) : out_(out), interactive_(interactive) {}

std::string KerasProgress::bar(int64_t step, int64_t steps) const {
  const int width = 30;
  std::string digits = std::to_string(steps);
  char head[64];
  std::snprintf(head, sizeof(head), "%*lld/%s [", static_cast<int>(digits.size()), static_cast<long long>(step),
                digits.c_str());
  int filled = steps ? static_cast<int>(width * step / steps) : width;
  std::string b = head;
  for (int i = 0; i < width; ++i) b += i < filled - 1 || (i == filled - 1 && step == steps) ? '=' : (i == filled - 1 ? '>' : '.');
  return b + "]";
}

void KerasProgress::epoch_begin(int epoch, int epochs, int64_t steps) {
  steps_ = steps;
  start_ = std::chrono::steady_clock::now();
  std::fprintf(out_, "Epoch %d/%d\n", epoch, epochs);
  std::fflush(out_);
}

void KerasProgress::step(int64_t step, int64_t steps, double loss, double accuracy) {
  if (!interactive_ || step == steps) return;  // the final line is written by epoch_end
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double eta = step ? elapsed / double(step) * double(steps - step) : 0;
  std::fprintf(out_, "\r%s - ETA: %.0fs - loss: %s - accuracy: %s\033[K", bar(step, steps).c_str(), eta,
               format_metric(loss).c_str(), format_metric(accuracy).c_str());
  std::fflush(out_);
}

void KerasProgress::epoch_end(const EpochLog& log) {
  double ms_per_step = log.steps ? 1000.0 * log.seconds / double(log.steps) : 0;
  std::string line = (interactive_ ? "\r" : "") + bar(log.steps, log.steps);
  char t[64];
  std::snprintf(t, sizeof(t), " - %.0fs %.0fms/step", log.seconds, ms_per_step);
  line += t;
  line += " - loss: " + format_metric(log.loss) + " - accuracy: " + format_metric(log.accuracy);
  if (log.has_val)
    line += " - val_loss: " + format_metric(log.val_loss) + " - val_accuracy: " + format_metric(log.val_accuracy);
  std::fprintf(out_, "%s%s\n", line.c_str(), interactive_ ? "\033[K" : "");
  std::fflush(out_);
}

TrainCallbacks KerasProgress::callbacks() {
  TrainCallbacks cb;
  cb.on_epoch_begin = [this](int e, int n, int64_t s) { epoch_begin(e, n, s); };
  cb.on_step = [this](int64_t s, int64_t n, double l, double a) { step(s, n, l, a); };
  cb.on_epoch_end = [this](const EpochLog& log) { epoch_end(log); };
  return cb;
}

}  // namespace tandem

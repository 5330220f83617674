#include "tools/callbacks/progress_bar.h"

#include <cmath>

#include "engine/trainer.h"

namespace tandem {

std::string format_metric(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), (std::fabs(v) > 1e-3 || v == 0) ? "%.4f" : "%.4e", v);
  return buf;
}

ProgressBar::ProgressBar(std::FILE* out, bool interactive) : out_(out), interactive_(interactive) {}

std::string ProgressBar::bar(int64_t step, int64_t steps) const {
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

void ProgressBar::on_epoch_begin(int epoch, int epochs, int64_t) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  std::fprintf(out_, "Epoch %d/%d\n", epoch, epochs);
  std::fflush(out_);
}

void ProgressBar::on_batch_end(const BatchLog& log) {
  if (!interactive_ || log.step == log.steps) return;  // the final line is written by on_epoch_end
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ <= std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = elapsed / double(log.step) * double(log.steps - log.step);
  std::fprintf(out_, "\r%s - ETA: %.0fs - loss: %s - accuracy: %s\033[K", bar(log.step, log.steps).c_str(), eta,
               format_metric(log.loss).c_str(), format_metric(log.accuracy).c_str());
  std::fflush(out_);
}

void ProgressBar::on_epoch_end(const EpochLog& log) {
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

}  // namespace tandem

#include "tools/callbacks/csv_logger.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/errors.h"
#include "engine/trainer.h"
#include "storage/atomic_file.h"

namespace tandem {

namespace {
// The shortest text that reads back as `v`, in fixed notation where Python's repr(float) (which
// Keras's CSVLogger writes) uses it: 0.0008, not 8e-04.
std::string shortest(double v) {
  char buf[400];  // room for the longest fixed form below 1e16
  const double m = std::fabs(v);
  const auto format = m >= 1e-4 && m < 1e16 ? std::chars_format::fixed : std::chars_format::general;
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, format);
  return ec == std::errc() ? std::string(buf, end) : "nan";
}
}  // namespace

CSVLogger::CSVLogger(std::string path, bool validation) : path_(std::move(path)), validation_(validation) {}

std::string CSVLogger::row(const EpochLog& l) const {
  std::string r = std::to_string(l.epoch - 1) + "," + shortest(l.accuracy) + "," + shortest(l.learning_rate) + "," +
                  shortest(l.loss);
  if (validation_) r += "," + shortest(l.val_accuracy) + "," + shortest(l.val_loss);
  return r + "\n";
}

void CSVLogger::on_train_begin() {
  // Rewritten from the (restored) history: a row that a killed run wrote after its last committed
  // checkpoint is dropped, as that epoch will run again.
  std::string text = validation_ ? "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                                 : "epoch,accuracy,learning_rate,loss\n";
  for (const EpochLog& l : trainer().history()) text += row(l);
  write_file_atomic(path_, text);
}

void CSVLogger::on_epoch_end(const EpochLog& log) {
  std::FILE* f = std::fopen(path_.c_str(), "a");
  const std::string r = row(log);
  bool ok = f && std::fwrite(r.data(), 1, r.size(), f) == r.size();
  if (f) ok = std::fclose(f) == 0 && ok;
  if (!ok) throw_io("--csv-log: cannot append to '" + path_ + "': " + std::strerror(errno), "check the path and free space");
}

}  // namespace tandem

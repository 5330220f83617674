#include "tools/callbacks/tensorboard.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "engine/errors.h"
#include "engine/trainer.h"
#include "engine/checksum.h"
#include "tensorflow/core/util/event.pb.h"
#include "tools/callbacks/host_name.h"

namespace tandem {

namespace {

// TFRecord's checksum: CRC32C, rotated and offset so that a CRC of data holding CRCs stays strong.
uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

class TensorBoard::EventFile {
 public:
  explicit EventFile(const std::string& dir) {
    static std::atomic<int> files{0};
    const std::string hint = "choose a writable --tensorboard DIR";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw_io("--tensorboard: cannot create '" + dir + "': " + ec.message(), hint);
    char name[96];
    std::snprintf(name, sizeof(name), "events.out.tfevents.%010lld.", static_cast<long long>(wall_time()));
    path_ = (std::filesystem::path(dir) / (name + host_name() + "." + std::to_string(::getpid()) + "." +
                                           std::to_string(files++) + ".v2"))
                .string();
    f_ = std::fopen(path_.c_str(), "wb");
    if (!f_) throw_io("--tensorboard: cannot create '" + path_ + "': " + std::strerror(errno), hint);
    tensorflow::Event e;
    e.set_wall_time(wall_time());
    e.set_file_version("brain.Event:2");
    write(e);
  }
  ~EventFile() {
    if (f_) std::fclose(f_);
  }
  EventFile(const EventFile&) = delete;
  EventFile& operator=(const EventFile&) = delete;

  // One Event at `step` holding every (tag, value) as a scalar, written and flushed.
  void scalars(int64_t step, const std::vector<std::pair<const char*, double>>& values) {
    tensorflow::Event e;
    e.set_wall_time(wall_time());
    e.set_step(step);
    for (const auto& [tag, value] : values) {
      tensorflow::Summary::Value* v = e.mutable_summary()->add_value();
      v->set_tag(tag);
      v->set_simple_value(static_cast<float>(value));
    }
    write(e);
  }

 private:
  void write(const tensorflow::Event& e) {
    const std::string data = e.SerializeAsString();
    std::string record;
    record.reserve(data.size() + 16);
    put_le(record, data.size(), 8);
    put_le(record, masked_crc32c(record.data(), 8), 4);
    record += data;
    put_le(record, masked_crc32c(data.data(), data.size()), 4);
    if (std::fwrite(record.data(), 1, record.size(), f_) != record.size() || std::fflush(f_) != 0)
      throw_io("--tensorboard: cannot write '" + path_ + "': " + std::strerror(errno), "check the free space");
  }

  std::string path_;
  std::FILE* f_ = nullptr;
};

TensorBoard::TensorBoard(std::string dir, int64_t update_freq, bool validation)
    : dir_(std::move(dir)), update_freq_(update_freq), validation_(validation) {}

TensorBoard::~TensorBoard() = default;

void TensorBoard::on_train_begin() {
  train_ = std::make_unique<EventFile>((std::filesystem::path(dir_) / "train").string());
  if (validation_) val_ = std::make_unique<EventFile>((std::filesystem::path(dir_) / "validation").string());
}

void TensorBoard::on_epoch_begin(int, int, int64_t) {}

void TensorBoard::on_batch_end(const BatchLog& log) {
  if (update_freq_ > 0 && log.global_step % update_freq_ == 0)
    train_->scalars(log.global_step, {{"batch_loss", log.loss}, {"batch_accuracy", log.accuracy}});
}

void TensorBoard::on_epoch_end(const EpochLog& log) {
  const int64_t step = log.epoch - 1;
  train_->scalars(step, {{"epoch_loss", log.loss},
                         {"epoch_accuracy", log.accuracy},
                         {"epoch_learning_rate", log.learning_rate},
                         {"epoch_samples_per_second", log.seconds > 0 ? log.samples / log.seconds : 0.0}});
  if (val_ && log.has_val) val_->scalars(step, {{"epoch_loss", log.val_loss}, {"epoch_accuracy", log.val_accuracy}});
}

}  // namespace tandem

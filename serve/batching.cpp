#include "serve/batching.h"

#include <algorithm>
#include <cstring>

#include "engine/errors.h"
#include "serve/config.h"
#include "tensorflow_serving/servables/tensorflow/session_bundle_config.pb.h"

namespace tandem::serve {

using Clock = std::chrono::steady_clock;

int64_t BatchingOptions::padded_size(int64_t rows) const {
  for (int64_t s : allowed_batch_sizes)
    if (s >= rows) return s;
  return rows;
}

void BatchingOptions::validate() const {
  if (max_batch_size < 1) throw_invalid("batching: max_batch_size must be at least 1");
  if (batch_timeout_micros < 0) throw_invalid("batching: batch_timeout_micros must not be negative");
  if (max_enqueued_batches < 1) throw_invalid("batching: max_enqueued_batches must be at least 1");
  if (num_batch_threads < 1 || num_batch_threads > 256)
    throw_invalid("batching: num_batch_threads must be between 1 and 256");
  for (size_t i = 0; i < allowed_batch_sizes.size(); ++i) {
    if (allowed_batch_sizes[i] < 1 || (i && allowed_batch_sizes[i] <= allowed_batch_sizes[i - 1]))
      throw_invalid("batching: allowed_batch_sizes must be positive and strictly ascending");
  }
  if (!allowed_batch_sizes.empty() && allowed_batch_sizes.back() != max_batch_size)
    throw_invalid("batching: the last entry of allowed_batch_sizes (" + std::to_string(allowed_batch_sizes.back()) +
                      ") must equal max_batch_size (" + std::to_string(max_batch_size) + ")",
                  "TF Serving requires the same");
}

BatchingOptions read_batching_parameters_file(const std::string& path, int cores) {
  tensorflow::serving::BatchingParameters p;
  parse_text_proto(path, "BatchingParameters",
                   "expected text format: max_batch_size { value: 32 } batch_timeout_micros { value: 1000 }", &p);
  BatchingOptions o;
  o.num_batch_threads = std::max(1, cores);
  if (p.has_max_batch_size()) o.max_batch_size = p.max_batch_size().value();
  if (p.has_batch_timeout_micros()) o.batch_timeout_micros = p.batch_timeout_micros().value();
  if (p.has_max_enqueued_batches()) o.max_enqueued_batches = p.max_enqueued_batches().value();
  if (p.has_num_batch_threads()) {
    if (p.num_batch_threads().value() < 1 || p.num_batch_threads().value() > 256)
      throw_invalid(path + ": num_batch_threads must be between 1 and 256");
    o.num_batch_threads = static_cast<int>(p.num_batch_threads().value());
  }
  o.allowed_batch_sizes.assign(p.allowed_batch_sizes().begin(), p.allowed_batch_sizes().end());
  if (p.enable_large_batch_splitting())
    throw_invalid(path + ": enable_large_batch_splitting is not supported",
                  "send requests of at most max_batch_size rows");
  if (p.has_max_execution_batch_size())
    throw_invalid(path + ": max_execution_batch_size is not supported (it goes with enable_large_batch_splitting)");
  try {
    o.validate();
  } catch (const Error& e) {
    throw_invalid(path + ": " + e.what(), e.hint());
  }
  return o;
}

BatchQueue::BatchQueue(BatchingOptions options, int64_t row_in, int64_t row_out, Compute compute,
                       std::function<void(const BatchStats&)> on_batch)
    : options_(std::move(options)), row_in_(row_in), row_out_(row_out), compute_(std::move(compute)),
      on_batch_(std::move(on_batch)) {
  for (int i = 0; i < options_.num_batch_threads; ++i) workers_.emplace_back([this] { worker(); });
}

BatchQueue::~BatchQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (Task* t : queue_) {
      t->done = true;
      t->status = {Code::UNAVAILABLE, "the version is being unloaded"};
      t->cv.notify_all();
    }
    queue_.clear();
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void BatchQueue::run(const float* in, int64_t rows, float* out, Clock::time_point deadline) {
  if (rows > options_.max_batch_size)
    fail(Code::INVALID_ARGUMENT, "Task size " + std::to_string(rows) + " is larger than maximum input batch size " +
                                     std::to_string(options_.max_batch_size));
  if (rows == 0) return;
  Task task;
  task.in = in;
  task.rows = rows;
  task.out = out;
  task.deadline = deadline;
  task.enqueued = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t batches = (queued_rows_ + rows + options_.max_batch_size - 1) / options_.max_batch_size;
  if (stop_ || batches > options_.max_enqueued_batches)
    fail(Code::UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full");
  queue_.push_back(&task);
  queued_rows_ += rows;
  work_cv_.notify_one();
  while (!task.done) {
    if (!task.taken && deadline != Clock::time_point::max()) {
      if (task.cv.wait_until(lock, deadline) == std::cv_status::timeout && !task.taken && !task.done) {
        queue_.erase(std::find(queue_.begin(), queue_.end(), &task));
        queued_rows_ -= rows;
        fail(Code::DEADLINE_EXCEEDED, "Deadline exceeded while the request waited in the batch queue");
      }
    } else {
      task.cv.wait(lock);
    }
  }
  if (!task.status.ok()) fail(task.status.code, task.status.message);
}

void BatchQueue::worker() {
  std::vector<float> in(static_cast<size_t>(options_.max_batch_size * row_in_));
  std::vector<float> out(static_cast<size_t>(options_.max_batch_size * row_out_));
  std::vector<Task*> batch;
  const auto timeout = std::chrono::microseconds(options_.batch_timeout_micros);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    // Wait for a full batch or for the oldest task's timeout.
    const auto close_at = queue_.front()->enqueued + timeout;
    while (!stop_ && !queue_.empty() && queued_rows_ < options_.max_batch_size && Clock::now() < close_at)
      work_cv_.wait_until(lock, close_at);
    if (stop_) return;
    if (queue_.empty()) continue;  // the tasks expired while we waited
    batch.clear();
    int64_t rows = 0;
    const auto start = Clock::now();
    while (!queue_.empty() && rows + queue_.front()->rows <= options_.max_batch_size) {
      Task* t = queue_.front();
      queue_.pop_front();
      queued_rows_ -= t->rows;
      if (start >= t->deadline) {  // expired: dropped before compute
        t->done = true;
        t->status = {Code::DEADLINE_EXCEEDED, "Deadline exceeded while the request waited in the batch queue"};
        t->cv.notify_all();
        continue;
      }
      t->taken = true;
      batch.push_back(t);
      rows += t->rows;
    }
    if (!queue_.empty()) work_cv_.notify_one();  // another worker may start the next batch
    if (batch.empty()) continue;
    lock.unlock();

    BatchStats stats;
    stats.rows = rows;
    stats.tasks = static_cast<int64_t>(batch.size());
    stats.padded_rows = options_.padded_size(rows);
    int64_t at = 0;
    for (Task* t : batch) {
      std::memcpy(in.data() + at * row_in_, t->in, sizeof(float) * static_cast<size_t>(t->rows * row_in_));
      stats.queue_micros.push_back(std::chrono::duration<double, std::micro>(start - t->enqueued).count());
      at += t->rows;
    }
    for (int64_t r = rows; r < stats.padded_rows; ++r)  // padding repeats the first row
      std::memcpy(in.data() + r * row_in_, in.data(), sizeof(float) * static_cast<size_t>(row_in_));
    Status status;
    const auto c0 = Clock::now();
    try {
      compute_(in.data(), stats.padded_rows, out.data());
    } catch (...) {
      status = current_exception_status();
    }
    stats.compute_micros = std::chrono::duration<double, std::micro>(Clock::now() - c0).count();
    at = 0;
    for (Task* t : batch) {
      if (status.ok())
        std::memcpy(t->out, out.data() + at * row_out_, sizeof(float) * static_cast<size_t>(t->rows * row_out_));
      at += t->rows;
    }
    if (on_batch_ && status.ok()) on_batch_(stats);
    lock.lock();
    for (Task* t : batch) {
      t->done = true;
      t->status = status;
      t->cv.notify_all();
    }
  }
}

}  // namespace tandem::serve

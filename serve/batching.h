// Dynamic batching, with TF Serving's BatchingParameters and semantics: requests to one version
// queue together; a batch runs when it is full or when its oldest request has waited
// batch_timeout_micros; it is padded (with copies of its first row) up to the next allowed batch
// size, and each request gets exactly its own rows back. One queue per servable version, so a
// batch never mixes versions. A request larger than max_batch_size is INVALID_ARGUMENT; a full
// queue (max_enqueued_batches) is UNAVAILABLE at once; a request whose deadline passes while it
// is queued is dropped before any computation (DEADLINE_EXCEEDED).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "serve/status.h"

namespace tandem::serve {

struct BatchStats {
  int64_t rows = 0, padded_rows = 0;  // real rows, and the batch size that ran
  int64_t tasks = 0;
  double compute_micros = 0;
  std::vector<double> queue_micros;  // per task, enqueue to the start of its batch
};

struct BatchingOptions {
  int64_t max_batch_size = 1000;
  int64_t batch_timeout_micros = 0;
  int64_t max_enqueued_batches = 10;
  int num_batch_threads = 1;
  std::vector<int64_t> allowed_batch_sizes;  // ascending, the last == max_batch_size; empty: any
  // The batch sizes a servable runs (and is warmed up at): the allowed sizes, or 1..max.
  int64_t padded_size(int64_t rows) const;
  void validate() const;  // throws Error(InvalidArgument)
};

// --batching_parameters_file: text-format BatchingParameters, TF Serving's defaults where unset
// (max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10, num_batch_threads the
// core count). Throws Error(Io/Data/InvalidArgument) naming the file (and line).
BatchingOptions read_batching_parameters_file(const std::string& path, int cores);

// The queue of one servable version. `compute(in, rows, out)` runs one padded batch.
class BatchQueue {
 public:
  using Compute = std::function<void(const float* in, int64_t rows, float* out)>;
  BatchQueue(BatchingOptions options, int64_t row_in, int64_t row_out, Compute compute,
             std::function<void(const BatchStats&)> on_batch);
  ~BatchQueue();  // answers what is still queued with UNAVAILABLE
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues `rows` rows and waits for their outputs. Throws RequestError (see above).
  void run(const float* in, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline);

 private:
  struct Task {
    const float* in;
    int64_t rows;
    float* out;
    std::chrono::steady_clock::time_point deadline, enqueued;
    bool taken = false, done = false;
    Status status;
    std::condition_variable cv;
  };
  void worker();
  BatchingOptions options_;
  int64_t row_in_, row_out_;
  Compute compute_;
  std::function<void(const BatchStats&)> on_batch_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<Task*> queue_;
  int64_t queued_rows_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace tandem::serve

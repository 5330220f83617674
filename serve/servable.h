// One loaded model version, ready for inference: the model and one or more Replicas, each with its
// own Backend (compute threads) and weights, whose activations are planned once for the largest
// batch (no allocation per request). Replicas run forward passes at the same time; a request
// takes whichever is free.
// Held through a ServableHandle (shared_ptr): a request keeps its version alive until it is
// answered, so a swap never cuts a request in half; the version is freed after its last request.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/model.h"
#include "engine/replica.h"
#include "serve/batching.h"

namespace tandem::serve {

struct ServableOptions {
  std::string device = "cpu";  // cpu or gpu:N
  int threads = 1;             // CPU compute threads of the version, shared out among its replicas
  int64_t max_batch = 256;     // rows per forward pass; larger requests run in chunks of this
  // Forward passes that may run at once. Each replica gets threads / replicas compute threads (at
  // least one), its own weights and activations. With batching: num_batch_threads, up to `threads`.
  int replicas = 1;
  bool batching = false;  // queue requests into batches (BatchQueue) with `batch`
  BatchingOptions batch;
  // --enable_per_model_batching_params: a version directory's batching_params.pbtxt (text-format
  // BatchingParameters, TF Serving's defaults where unset) replaces `batch` for that version.
  bool per_model_batching = false;
  int cores = 1;  // num_batch_threads where a batching_params.pbtxt leaves it unset
  // Called after each batch (metrics), with the servable's model name and version.
  std::function<void(const std::string& model, int64_t version, const BatchStats&)> on_batch;
};

// The one signature every Tandem servable has, as the SavedModel export writes it.
constexpr const char* kDefaultSignature = "serving_default";
constexpr const char* kPredictMethod = "tensorflow/serving/predict";
constexpr const char* kInputName = "input";
constexpr const char* kOutputName = "probabilities";
constexpr const char* kBatchingParamsFileName = "batching_params.pbtxt";  // as TF Serving names it

class Servable {
 public:
  // Reads, verifies (every CRC32C) and builds version `version` of model `name` from `dir`, then
  // warms it up (a forward pass at every batch size in `warmup_batches`, and at 1 and max_batch).
  // Throws tandem::Error naming the file and the problem. `on_destroy` runs when it is freed.
  static std::shared_ptr<Servable> load(const std::string& name, int64_t version, const std::string& dir,
                                        const ServableOptions& options, std::function<void()> on_destroy = nullptr);
  ~Servable();

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const Shape& input_shape() const { return model_.input_shape(); }  // one row, e.g. [28, 28, 1]
  int64_t row_elems() const { return model_.input_shape().numel(); }
  int num_classes() const { return model_.num_classes(); }
  int64_t max_batch() const { return options_.max_batch; }
  int replicas() const { return static_cast<int>(slots_.size()); }
  double load_seconds() const { return load_seconds_; }

  // Class probabilities for `rows` inputs (row-major, already x/255) into out[rows * classes].
  // Answers one request: through the batch queue when batching is on, else directly. Throws
  // RequestError: DEADLINE_EXCEEDED (nothing computed), and the batch queue's errors.
  void infer(const float* inputs, int64_t rows, float* out, std::chrono::steady_clock::time_point deadline);

  // Runs on a free replica; waits for one until `deadline`. A call whose deadline passes before a
  // replica is free computes nothing and returns false.
  bool predict(const float* inputs, int64_t rows, float* out,
               std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());

 private:
  struct Slot {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Replica> replica;  // freed before its backend
  };
  Servable(std::string name, int64_t version, Model model, const ServableOptions& options);
  // `rows` rows on `slot`, in chunks of at most max_batch.
  void forward(Slot& slot, const float* inputs, int64_t rows, float* out);
  void forward_chunk(Slot& slot, const float* inputs, int64_t rows, float* out);
  std::string name_;
  int64_t version_;
  Model model_;
  ServableOptions options_;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<size_t> free_;  // slots not running a forward pass
  double load_seconds_ = 0;
  std::function<void()> on_destroy_;
  std::unique_ptr<BatchQueue> batch_;  // declared last: its workers stop before the rest goes
};

using ServableHandle = std::shared_ptr<Servable>;

}  // namespace tandem::serve

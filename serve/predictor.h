// The one request type every front end decodes into, and the code that answers it: resolve the
// version, check the signature and the input's shape, honour the deadline, run the forward pass.
// Front ends parse and validate their protocol into a PredictCall and never touch the manager;
// the batcher (when it lands) sits behind Predictor::predict.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "serve/model_manager.h"
#include "serve/servable.h"

namespace tandem::serve {

class ServerMetrics;

using Clock = std::chrono::steady_clock;

struct ModelRef {
  std::string name;
  std::optional<int64_t> version;
  std::string label;
  std::string signature;  // "" means serving_default
};

struct PredictCall {
  ModelRef model;
  std::string input_name = kInputName;  // as the client named it
  std::vector<int64_t> shape;           // of the input, batch first
  std::vector<float> values;            // row-major, shape's product (empty when borrowed)
  // Or the values where the request holds them (gRPC tensor_content, a KServe binary tensor),
  // read in place: no copy before the one into the batch or the replica. Valid during the call.
  const float* borrowed = nullptr;
  size_t borrowed_count = 0;
  Clock::time_point deadline = Clock::time_point::max();

  const float* input() const { return borrowed ? borrowed : values.data(); }
  size_t input_count() const { return borrowed ? borrowed_count : values.size(); }
  // Points at `bytes` (little-endian float32, as on this host) when they are aligned for floats,
  // else copies them into `values`.
  void set_input_bytes(const char* bytes, size_t count);
};

struct PredictResult {
  ServableHandle servable;  // the version that answered
  int64_t rows = 0;
  int classes = 0;
  std::vector<float> probabilities;  // [rows, classes]
};

struct Limits {
  int64_t max_rows = 10000;  // rows in one request
};

// "[-1, 28, 28, 1]"
std::string shape_str(const std::vector<int64_t>& dims);
// Product of dims, each non-negative, or RequestError(INVALID_ARGUMENT) on a negative dimension or
// an element count over 2^40.
int64_t checked_elements(const std::vector<int64_t>& dims, const std::string& what);
// Signature name "" or serving_default, else FAILED_PRECONDITION with TF Serving's message.
void check_signature(const std::string& signature);

class Predictor {
 public:
  Predictor(ModelManager& manager, ServerMetrics* metrics, Limits limits)
      : manager_(manager), metrics_(metrics), limits_(limits) {}
  ServableHandle resolve(const ModelRef& ref) const;
  // Throws RequestError: the manager's codes, INVALID_ARGUMENT for a bad input name or shape or
  // too many rows, DEADLINE_EXCEEDED (before any computation) when the deadline has passed.
  PredictResult predict(const PredictCall& call) const;
  const Limits& limits() const { return limits_; }

 private:
  ModelManager& manager_;
  ServerMetrics* metrics_;
  Limits limits_;
};

}  // namespace tandem::serve

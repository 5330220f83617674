#include "serve/predictor.h"

#include <cstring>

#include "serve/metrics.h"
#include "serve/status.h"

namespace tandem::serve {

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

int64_t checked_elements(const std::vector<int64_t>& dims, const std::string& what) {
  constexpr int64_t kMax = int64_t{1} << 40;
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) fail(Code::INVALID_ARGUMENT, what + " has a negative dimension: shape " + shape_str(dims));
    if (d != 0 && n > kMax / d) fail(Code::INVALID_ARGUMENT, what + " is too large: shape " + shape_str(dims));
    n *= d;
  }
  return n;
}

void check_signature(const std::string& signature) {
  if (!signature.empty() && signature != kDefaultSignature)
    fail(Code::FAILED_PRECONDITION, "Serving signature name: \"" + signature + "\" not found in signature def");
}

ServableHandle Predictor::resolve(const ModelRef& ref) const {
  if (ref.version && !ref.label.empty())
    fail(Code::INVALID_ARGUMENT, "a request may name a version or a version label, not both");
  ServableHandle h = manager_.resolve(ref.name, ref.version, ref.label);
  check_signature(ref.signature);
  return h;
}

void PredictCall::set_input_bytes(const char* bytes, size_t count) {
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    values.clear();
    borrowed = reinterpret_cast<const float*>(bytes);
    borrowed_count = count;
    return;
  }
  borrowed = nullptr;
  values.resize(count);
  std::memcpy(values.data(), bytes, count * sizeof(float));
}

PredictResult Predictor::predict(const PredictCall& call) const {
  PredictResult r;
  r.servable = resolve(call.model);
  const Servable& s = *r.servable;
  if (call.input_name != kInputName)
    fail(Code::INVALID_ARGUMENT, "input tensor alias not found in signature: " + call.input_name +
                                     ". Inputs expected to be in the set {" + kInputName + "}.");
  std::vector<int64_t> expected{-1};
  for (int64_t d : s.input_shape().dims) expected.push_back(d);
  bool match = call.shape.size() == expected.size();
  for (size_t i = 1; match && i < expected.size(); ++i) match = call.shape[i] == expected[i];
  if (!match)
    fail(Code::INVALID_ARGUMENT, "input '" + std::string(kInputName) + "' must have shape " + shape_str(expected) +
                                     ", got " + shape_str(call.shape));
  r.rows = call.shape[0];
  r.classes = s.num_classes();
  if (r.rows > limits_.max_rows)
    fail(Code::INVALID_ARGUMENT, "the request has " + std::to_string(r.rows) + " rows; this server takes at most " +
                                     std::to_string(limits_.max_rows) + " (--max_rows_per_request)");
  if (static_cast<int64_t>(call.input_count()) != r.rows * s.row_elems())
    fail(Code::INVALID_ARGUMENT, "input '" + std::string(kInputName) + "' has " + std::to_string(call.input_count()) +
                                     " values for shape " + shape_str(call.shape));
  if (Clock::now() >= call.deadline)
    fail(Code::DEADLINE_EXCEEDED, "Deadline exceeded before the request was computed");
  r.probabilities.resize(static_cast<size_t>(r.rows * r.classes));
  r.servable->infer(call.input(), r.rows, r.probabilities.data(), call.deadline);
  if (metrics_) metrics_->rows_computed(s.name(), s.version(), r.rows);
  return r;
}

}  // namespace tandem::serve

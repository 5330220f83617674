// The canonical status codes (gRPC's, which TF Serving uses everywhere) and a request error that
// carries one. Front ends turn a RequestError into their protocol's form: the gRPC status, or an
// HTTP code with {"error": "..."} as TF Serving's REST API maps them.
#pragma once
#include <stdexcept>
#include <string>

namespace tandem::serve {

enum class Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
};

const char* code_name(Code code);  // "INVALID_ARGUMENT"
int http_status(Code code);        // TF Serving's REST mapping: 400, 404, 503, 504, ...

struct Status {
  Code code = Code::OK;
  std::string message;
  bool ok() const { return code == Code::OK; }
};

class RequestError : public std::runtime_error {
 public:
  RequestError(Code code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Code code() const { return code_; }
  Status status() const { return {code_, what()}; }

 private:
  Code code_;
};

[[noreturn]] inline void fail(Code code, const std::string& message) { throw RequestError(code, message); }

// The status of whatever exception is being handled: a RequestError's own, INVALID_ARGUMENT for
// Tandem's bad-input errors, RESOURCE_EXHAUSTED for bad_alloc, INTERNAL otherwise. Call in a catch.
Status current_exception_status();

}  // namespace tandem::serve

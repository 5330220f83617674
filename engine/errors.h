// Typed errors: every failure Tandem reports carries what went wrong, where, and a hint.
// Library code throws; only tools/ catches, prints one message and exits (2 = bad input, 1 = other).
#pragma once
#include <stdexcept>
#include <string>

namespace tandem {

enum class ErrorKind {
  InvalidArgument,  // flags, model specs, API misuse by the caller
  Data,             // malformed or inconsistent input files
  Io,               // files that cannot be opened, read or written
  Device,           // CUDA / cuDNN / cuBLAS failures, missing GPU
  Communication,    // MPI / NCCL failures, rank mismatches, stalls
  Numeric,          // training diverged: a loss that became NaN or infinite
  Internal,         // a bug in Tandem
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, std::string hint = "")
      : std::runtime_error(message), kind_(kind), hint_(std::move(hint)) {}
  ErrorKind kind() const { return kind_; }
  const std::string& hint() const { return hint_; }
  // Exit status for the CLI: 2 when the user's input is at fault, 1 otherwise.
  int exit_status() const {
    return (kind_ == ErrorKind::InvalidArgument || kind_ == ErrorKind::Data || kind_ == ErrorKind::Io) ? 2 : 1;
  }

 private:
  ErrorKind kind_;
  std::string hint_;
};

[[noreturn]] inline void throw_error(ErrorKind kind, const std::string& message, const std::string& hint = "") {
  throw Error(kind, message, hint);
}
[[noreturn]] inline void throw_invalid(const std::string& message, const std::string& hint = "") {
  throw Error(ErrorKind::InvalidArgument, message, hint);
}
[[noreturn]] inline void throw_data(const std::string& message, const std::string& hint = "") {
  throw Error(ErrorKind::Data, message, hint);
}
[[noreturn]] inline void throw_io(const std::string& message, const std::string& hint = "") {
  throw Error(ErrorKind::Io, message, hint);
}

}  // namespace tandem

// Internal invariant: a failure here is a Tandem bug, reported with file:line.
#define TANDEM_ASSERT(cond)                                                                    \
  do {                                                                                         \
    if (!(cond))                                                                               \
      ::tandem::throw_error(::tandem::ErrorKind::Internal,                                     \
                            std::string("internal check failed: " #cond " at ") + __FILE__ + \
                                ":" + std::to_string(__LINE__),                                \
                            "please report this as a bug");                                    \
  } while (0)

#include "engine/errors.h"

namespace tandem {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Data: return "data error";
    case ErrorKind::Io: return "I/O error";
    case ErrorKind::Device: return "device error";
    case ErrorKind::Communication: return "communication error";
    case ErrorKind::Numeric: return "numeric error";
    case ErrorKind::Internal: return "internal error";
  }
  return "error";
}

}  // namespace tandem

#include "serve/status.h"

#include <exception>
#include <new>

#include "engine/errors.h"

namespace tandem::serve {

const char* code_name(Code code) {
  switch (code) {
    case Code::OK: return "OK";
    case Code::CANCELLED: return "CANCELLED";
    case Code::UNKNOWN: return "UNKNOWN";
    case Code::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case Code::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case Code::NOT_FOUND: return "NOT_FOUND";
    case Code::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case Code::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case Code::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case Code::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case Code::ABORTED: return "ABORTED";
    case Code::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case Code::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case Code::INTERNAL: return "INTERNAL";
    case Code::UNAVAILABLE: return "UNAVAILABLE";
    case Code::DATA_LOSS: return "DATA_LOSS";
    case Code::UNAUTHENTICATED: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

int http_status(Code code) {
  switch (code) {
    case Code::OK: return 200;
    case Code::CANCELLED: return 499;
    case Code::INVALID_ARGUMENT:
    case Code::FAILED_PRECONDITION:
    case Code::OUT_OF_RANGE: return 400;
    case Code::NOT_FOUND: return 404;
    case Code::ALREADY_EXISTS:
    case Code::ABORTED: return 409;
    case Code::PERMISSION_DENIED: return 403;
    case Code::UNAUTHENTICATED: return 401;
    case Code::RESOURCE_EXHAUSTED: return 429;
    case Code::UNIMPLEMENTED: return 501;
    case Code::UNAVAILABLE: return 503;
    case Code::DEADLINE_EXCEEDED: return 504;
    default: return 500;
  }
}

Status current_exception_status() {
  try {
    throw;
  } catch (const RequestError& e) {
    return e.status();
  } catch (const Error& e) {
    const bool user = e.kind() == ErrorKind::InvalidArgument || e.kind() == ErrorKind::Data;
    return {user ? Code::INVALID_ARGUMENT : Code::INTERNAL, e.what()};
  } catch (const std::bad_alloc&) {
    return {Code::RESOURCE_EXHAUSTED, "out of memory while serving the request"};
  } catch (const std::exception& e) {
    return {Code::INTERNAL, std::string("internal error: ") + e.what()};
  } catch (...) {
    return {Code::INTERNAL, "internal error"};
  }
}

}  // namespace tandem::serve

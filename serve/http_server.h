// The HTTP transport of the REST front ends: cpp-httplib (Debian's libcpp-httplib-dev) parsing
// requests and writing replies for RestHandler, on a pool of workers that each serve one request at
// a time; between requests a keep-alive connection waits in an epoll set without a worker, so idle
// or silent connections cannot starve the others. A bounded body size (413 with a JSON error above
// it), a bound on reading one request and on each write, so a slow or half-open client holds a
// worker for a bounded time only, and a stop that lets requests in flight finish.
#pragma once
#include <memory>
#include <string>
#include <thread>

#include "serve/rest_api.h"

namespace tandem::serve {

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 8501;
  int threads = 64;  // workers: requests read, computed and answered at once
  size_t max_body_bytes = size_t{64} << 20;
  int read_timeout_seconds = 10;  // to read one request (headers and body); also each write's limit
  int keep_alive_seconds = 5;     // an idle connection is closed after this
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, const RestHandler& handler);
  ~HttpServer();
  // Binds (throws Error(Io) naming host:port when it cannot) and serves on a thread of its own.
  void start();
  // Stops accepting; requests already read are answered; returns when the workers are done.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::serve

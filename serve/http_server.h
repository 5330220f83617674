// The HTTP transport of the REST front ends: cpp-httplib's threaded server (Debian's
// libcpp-httplib-dev) carrying RestHandler. Keep-alive connections, a bounded body size (413 with
// a JSON error above it), read and write timeouts so a slow or half-open client holds one worker
// for a bounded time only, and a stop that lets requests in flight finish.
#pragma once
#include <memory>
#include <string>
#include <thread>

#include "serve/rest_api.h"

namespace tandem::serve {

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 8501;
  int threads = 64;  // workers; each keep-alive connection holds one while it is open
  size_t max_body_bytes = size_t{64} << 20;
  int read_timeout_seconds = 10;
  int keep_alive_seconds = 5;
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

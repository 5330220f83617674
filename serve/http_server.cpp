#include "serve/http_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <cstdlib>

#include "engine/errors.h"

namespace tandem::serve {

struct HttpServer::Impl {
  HttpOptions options;
  const RestHandler& handler;
  httplib::Server server;
  std::thread thread;
  int listen_fd = -1;
  Impl(HttpOptions o, const RestHandler& h) : options(std::move(o)), handler(h) {}

  void serve(const httplib::Request& req, std::string body, httplib::Response& res) {
    const auto arrival = Clock::now();
    HttpRequest r;
    r.method = req.method;
    r.path = req.path;
    for (const char* name : {"inference-header-content-length"})
      if (req.has_header(name)) r.headers[name] = req.get_header_value(name);
    r.body = std::move(body);
    HttpReply reply = handler.handle(r, arrival);
    res.status = reply.status;
    for (auto& [k, v] : reply.headers) res.set_header(k, v);
    res.set_content(std::move(reply.body), reply.content_type.c_str());
  }
};

HttpServer::HttpServer(HttpOptions options, const RestHandler& handler)
    : impl_(std::make_unique<Impl>(std::move(options), handler)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  auto& s = impl_->server;
  const int threads = impl_->options.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(impl_->options.max_body_bytes);
  s.set_read_timeout(impl_->options.read_timeout_seconds, 0);
  s.set_write_timeout(impl_->options.read_timeout_seconds, 0);
  s.set_keep_alive_timeout(impl_->options.keep_alive_seconds);
  s.set_keep_alive_max_count(100000);
  // Small replies go out at once: without it Nagle's algorithm meets the client's delayed ACK and
  // every keep-alive request waits ~40 ms (measured: mlp at concurrency 1, 23 requests/s).
  s.set_tcp_nodelay(true);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind the same port without an
  // error (and share its connections); SO_REUSEADDR only allows a restart over TIME_WAIT sockets.
  s.set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (impl_->listen_fd < 0) impl_->listen_fd = sock;
  });
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { impl_->serve(req, req.body, res); };
  // Bodies are read here whatever their Content-Type: httplib would parse curl's default
  // (application/x-www-form-urlencoded, what `curl -d @req.json` sends) as a form and refuse one
  // over 8 KiB with 413. The body-size limit still applies (413 above it).
  auto with_body = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
    const size_t max = impl_->options.max_body_bytes;
    std::string body;
    bool too_large = req.has_header("Content-Length") &&
                     std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10) > max;
    const bool complete = !too_large && read([&](const char* data, size_t n) {
      too_large = body.size() + n > max;
      if (!too_large) body.append(data, n);
      return !too_large;
    });
    if (!complete && !too_large) {  // the client sent less than it announced, or went away
      res.status = 400;
      res.set_header("Connection", "close");
      res.set_content(nlohmann::json{{"error", "the request body could not be read completely"}}.dump(),
                      "application/json");
      return;
    }
    if (too_large) {  // the rest of the body is not read: the connection closes after the reply
      res.status = 413;
      res.set_header("Connection", "close");
      res.set_content(nlohmann::json{{"error", "the request body is larger than " + std::to_string(max) +
                                                   " bytes (--rest_api_max_body_bytes)"}}.dump(),
                      "application/json");
      return;
    }
    impl_->serve(req, std::move(body), res);
  };
  s.Get(".*", handler);
  s.Post(".*", with_body);
  s.Put(".*", with_body);
  s.Delete(".*", with_body);
  s.Patch(".*", with_body);
  const size_t max_body = impl_->options.max_body_bytes;
  s.set_error_handler([max_body](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 413 ? "the request body is larger than " + std::to_string(max_body) +
                                              " bytes (--rest_api_max_body_bytes)"
                                        : "HTTP error " + std::to_string(res.status);
    res.set_content(nlohmann::json{{"error", msg}}.dump(), "application/json");
  });
  if (!s.bind_to_port(impl_->options.host.c_str(), impl_->options.port))
    throw_io("cannot listen for REST on " + impl_->options.host + ":" + std::to_string(impl_->options.port),
             "is the port in use by another server? choose another with --rest_api_port (0 turns REST off)");
  // libcpp-httplib 0.11 listens with a backlog of 5: 64 clients connecting at once had SYNs
  // dropped and retried after 1 s (p99 over 1 s at concurrency 64). Listening again on the bound
  // socket raises the backlog (to net.core.somaxconn at most).
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

void HttpServer::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace tandem::serve

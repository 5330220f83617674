#include "serve/http_server.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "engine/errors.h"

namespace tandem::serve {

namespace {

using SteadyClock = std::chrono::steady_clock;

// Set by a handler that answers with "Connection: close" (a body not read completely or too
// large): the worker then closes the connection instead of parking it, since the rest of the body
// is still in it. httplib's connection_closed reflects only the request's Connection header.
thread_local bool close_after_reply = false;

// poll(2), retried when a signal interrupts it.
int poll_fds(pollfd* fds, nfds_t n, int timeout_ms) {
  int r;
  do r = ::poll(fds, n, timeout_ms);
  while (r < 0 && errno == EINTR);
  return r;
}

// One client connection: its socket and the bytes read from it but not yet consumed (kept across
// requests, so that pipelined requests are not lost when the connection is parked).
struct Connection {
  int fd = -1;
  std::string buf;
  size_t off = 0;
  SteadyClock::time_point deadline;  // reading the current request must end by then
  SteadyClock::time_point idle_since;
  bool buffered() const { return off < buf.size(); }
};

// httplib's Stream over a Connection, with the timeouts of HttpOptions: each wait for the socket is
// bounded, and so is the whole request (a client that sends a byte a second holds its worker for
// read_timeout at most, not for as long as it likes).
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, int write_timeout_ms) : c_(c), write_timeout_ms_(write_timeout_ms) {}
  bool is_readable() const override { return c_.buffered() || wait(POLLIN, left_ms()) > 0; }
  bool is_writable() const override { return wait(POLLOUT, write_timeout_ms_) > 0; }
  ssize_t read(char* ptr, size_t size) override {
    if (!c_.buffered()) {
      c_.buf.resize(16384);
      c_.off = 0;
      ssize_t n = -1;
      for (;;) {
        if (wait(POLLIN, left_ms()) <= 0) break;
        n = ::recv(c_.fd, c_.buf.data(), c_.buf.size(), MSG_DONTWAIT);
        if (n >= 0 || (errno != EINTR && errno != EAGAIN)) break;
      }
      c_.buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
      if (n <= 0) return n < 0 ? -1 : 0;
    }
    const size_t k = std::min(size, c_.buf.size() - c_.off);
    std::memcpy(ptr, c_.buf.data() + c_.off, k);
    c_.off += k;
    return static_cast<ssize_t>(k);
  }
  ssize_t write(const char* ptr, size_t size) override {
    size_t done = 0;
    while (done < size) {
      if (wait(POLLOUT, write_timeout_ms_) <= 0) return -1;
      const ssize_t n = ::send(c_.fd, ptr + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return -1;
      done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return c_.fd; }

 private:
  int left_ms() const {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c_.deadline - SteadyClock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  }
  int wait(short events, int timeout_ms) const {
    pollfd p{c_.fd, events, 0};
    return poll_fds(&p, 1, timeout_ms);
  }
  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof(a);
    ip.clear();
    port = 0;
    if (get(c_.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
      port = ntohs(v6->sin6_port);
    }
    ip = text;
  }
  Connection& c_;
  int write_timeout_ms_;
};

// The workers: httplib's ThreadPool, plus an eventfd that is readable while a job waits, so that
// a worker can stay on its connection while no other connection needs a worker.
class WorkerPool final : public httplib::TaskQueue {
 public:
  explicit WorkerPool(size_t n) : waiting_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (waiting_fd_ < 0) throw_io(std::string("eventfd: ") + std::strerror(errno));
    for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() override { ::close(waiting_fd_); }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(fn));
      if (jobs_.size() == 1) {
        const uint64_t one = 1;
        [[maybe_unused]] const ssize_t n = ::write(waiting_fd_, &one, sizeof(one));
      }
    }
    cv_.notify_one();
  }
  int waiting_fd() const { return waiting_fd_; }
  void shutdown() override {  // the jobs already queued still run
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return shutdown_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        if (jobs_.empty()) {
          uint64_t count;
          [[maybe_unused]] const ssize_t n = ::read(waiting_fd_, &count, sizeof(count));
        }
      }
      fn();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  const int waiting_fd_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

// httplib's server with connections that wait for their next request without a worker.
// httplib gives each connection a worker thread for its whole life: 64 workers meant 1,000 idle
// keep-alive connections (or clients that connect and send nothing) made every other client wait
// in the queue for minutes (measured: 74.6 s for one predict behind 1,000 idle connections). Here
// a worker serves a connection's requests only while no other connection waits for a worker;
// then the connection is parked in an epoll set, handed back to the pool when it becomes
// readable, and closed after keep_alive_seconds idle.
class ParkingServer final : public httplib::Server {
 public:
  explicit ParkingServer(const HttpOptions& o)
      : read_timeout_ms_(o.read_timeout_seconds * 1000),
        write_timeout_ms_(o.read_timeout_seconds * 1000),
        idle_timeout_(std::chrono::seconds(o.keep_alive_seconds)),
        epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (epoll_fd_ < 0) throw_io(std::string("epoll_create1: ") + std::strerror(errno));
    const int threads = o.threads;
    new_task_queue = [this, threads] {
      auto* pool = new WorkerPool(static_cast<size_t>(threads));
      pool_.store(pool);
      return pool;
    };
  }
  ~ParkingServer() override {
    stop_parking();
    ::close(epoll_fd_);
  }

  void start_parking() { parker_ = std::thread([this] { park_loop(); }); }
  // Closes every parked connection; connections that finish a request afterwards are closed.
  void stop_parking() {
    if (!parker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);  // park() checks it under the lock: none slips in after
      stopping_ = true;
    }
    parker_.join();
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [fd, c] : parked_) {
      ::close(fd);
      delete c;
    }
    parked_.clear();
  }

 private:
  // Called by httplib on a worker for each accepted socket; the connection is ours from here on.
  bool process_and_close_socket(socket_t sock) override {
    serve(new Connection{sock, {}, 0, {}, SteadyClock::now()});
    return true;
  }

  // True when the connection has its next request before another connection needs this worker
  // (or before the keep-alive time). While workers suffice, each connection keeps its worker as in
  // httplib's own loop: handing every request to the parker and back costs two thread wake-ups
  // (measured: 0.37x the requests/s at concurrency 1). Once a connection waits for a worker, the
  // others park and their workers go to it.
  bool next_request_soon(const Connection& c) const {
    if (c.buffered()) return true;
    const WorkerPool* pool = pool_.load();
    pollfd p[2] = {{c.fd, POLLIN, 0}, {pool ? pool->waiting_fd() : -1, POLLIN, 0}};
    const auto until = c.idle_since + idle_timeout_;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now()).count();
      if (left <= 0) return false;
      if (poll_fds(p, 2, static_cast<int>(std::min<int64_t>(left, 200))) < 0) return false;
      if (p[0].revents) return true;  // a request, or the end of the connection (read finds it)
      if (p[1].revents || stopping_) return false;
    }
  }

  void serve(Connection* c) {  // on a worker: requests while they come, then park or close
    c->idle_since = SteadyClock::now();
    while (next_request_soon(*c)) {
      c->deadline = SteadyClock::now() + std::chrono::milliseconds(read_timeout_ms_);
      ConnectionStream strm(*c, write_timeout_ms_);
      bool closed = false;
      close_after_reply = false;
      const bool ok = process_request(strm, /*close_connection=*/false, closed, [&](httplib::Request& req) {
        strm.get_remote_ip_and_port(req.remote_addr, req.remote_port);
      });
      if (!ok || closed || close_after_reply || stopping_) {
        finish(c);
        return;
      }
      c->idle_since = SteadyClock::now();
    }
    if (SteadyClock::now() - c->idle_since >= idle_timeout_) {
      finish(c);
      return;
    }
    park(c);
  }


  void finish(Connection* c) {
    ::shutdown(c->fd, SHUT_RDWR);
    ::close(c->fd);
    delete c;
  }

  void park(Connection* c) {
    WorkerPool* pool = pool_.load();
    if (stopping_ || pool == nullptr) {
      finish(c);
      return;
    }
    if (c->buffered()) {  // a pipelined request is already here
      pool->enqueue([this, c] { serve(c); });
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      finish(c);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
    ev.data.fd = c->fd;
    parked_[c->fd] = c;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      parked_.erase(c->fd);
      finish(c);
    }
  }

  void park_loop() {
    epoll_event events[256];
    auto last_sweep = SteadyClock::now();
    while (!stopping_) {
      const int n = ::epoll_wait(epoll_fd_, events, 256, 100);
      std::vector<Connection*> ready;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < n; ++i) {
          const auto it = parked_.find(events[i].data.fd);
          if (it == parked_.end()) continue;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
          ready.push_back(it->second);
          parked_.erase(it);
        }
        const auto now = SteadyClock::now();
        if (now - last_sweep > std::chrono::milliseconds(250)) {  // idle keep-alive connections
          last_sweep = now;
          for (auto it = parked_.begin(); it != parked_.end();) {
            if (now - it->second->idle_since < idle_timeout_) {
              ++it;
              continue;
            }
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
            finish(it->second);
            it = parked_.erase(it);
          }
        }
      }
      // Readable, or the peer closed: a worker reads it (and closes it on end of stream).
      for (Connection* c : ready) pool_.load()->enqueue([this, c] { serve(c); });
    }
  }

  const int read_timeout_ms_, write_timeout_ms_;
  const SteadyClock::duration idle_timeout_;
  const int epoll_fd_;
  std::atomic<WorkerPool*> pool_{nullptr};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::unordered_map<int, Connection*> parked_;
  std::thread parker_;
};

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  const RestHandler& handler;
  ParkingServer server;
  std::thread thread;
  int listen_fd = -1;
  Impl(HttpOptions o, const RestHandler& h) : options(std::move(o)), handler(h), server(options) {}

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
  s.set_payload_max_length(impl_->options.max_body_bytes);
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
      close_after_reply = true;
      res.set_content(nlohmann::json{{"error", "the request body could not be read completely"}}.dump(),
                      "application/json");
      return;
    }
    if (too_large) {  // the rest of the body is not read: the connection closes after the reply
      res.status = 413;
      res.set_header("Connection", "close");
      close_after_reply = true;
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
  impl_->server.start_parking();
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

void HttpServer::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->server.stop_parking();  // idle connections close; requests being read or computed finish
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace tandem::serve

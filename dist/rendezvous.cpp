#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/errors.h"

namespace tandem {

// Messages on a connection: a 4-byte length (of what follows), one byte naming the message, then
// its payload. Requests before the control plane starts: S set, C create, G get (8-byte timeout in
// ms, then the key), answered V (value) / E (existed) / T (timed out). Control: K (4-byte rank) starts
// it, then H heartbeat (two 8-byte counts), A abort (4-byte code) and B goodbye from the rank; P ping
// and A abort from rank 0.
namespace {

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

constexpr uint32_t kMaxMessage = 64u << 20;

bool write_message(int fd, char op, const std::string& payload) {
  const uint32_t len = static_cast<uint32_t>(payload.size() + 1);
  std::string frame(4 + len, '\0');
  std::memcpy(&frame[0], &len, 4);
  frame[4] = op;
  std::memcpy(&frame[5], payload.data(), payload.size());
  return write_all(fd, frame.data(), frame.size());
}

bool read_message(int fd, char* op, std::string* payload) {
  uint32_t len = 0;
  if (!read_all(fd, &len, 4) || len == 0 || len > kMaxMessage) return false;
  std::string body(len, '\0');
  if (!read_all(fd, &body[0], len)) return false;
  *op = body[0];
  payload->assign(body, 1, std::string::npos);
  return true;
}

template <typename T>
std::string pack(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}
template <typename T>
T unpack(const std::string& s, size_t at = 0) {
  T v{};
  if (s.size() >= at + sizeof(T)) std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

}  // namespace

// ---- the server -------------------------------------------------------------------------------

struct RendezvousServer::Conn {
  int fd = -1;
  int rank = -1;  // set by K
  std::mutex write_mu;
  std::thread thread;
  bool send(char op, const std::string& payload) {
    std::lock_guard<std::mutex> lock(write_mu);
    return write_message(fd, op, payload);
  }
};

RendezvousServer::RendezvousServer(int port, const std::string& field) {
  listen_fd_ = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool v6 = listen_fd_ >= 0;
  if (!v6) listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    throw Error(ErrorKind::Communication, std::string("cannot create the rendezvous socket: ") + std::strerror(errno));
  int one = 1, zero = 0;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (v6) {
    ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));  // IPv4 clients too
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 || ::listen(listen_fd_, 1024) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd_);
    throw_invalid(field + ": rank 0 cannot listen on port " + std::to_string(port) + " for the rendezvous: " + why,
                  "pick a free port for rank 0 (another job may hold this one), the same in every worker's launch");
  }
  acceptor_ = std::thread([this] { accept_loop(); });
  pinger_ = std::thread([this] { ping_loop(); });
}

RendezvousServer::~RendezvousServer() {
  std::vector<std::shared_ptr<Conn>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    conns = conns_;
  }
  cv_.notify_all();
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (pinger_.joinable()) pinger_.join();
  for (auto& c : conns) ::shutdown(c->fd, SHUT_RDWR);
  for (auto& c : conns)
    if (c->thread.joinable()) c->thread.join();
  for (auto& c : conns) ::close(c->fd);
  ::close(listen_fd_);
}

void RendezvousServer::accept_loop() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // shut down
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_shared<Conn>();
    c->fd = fd;
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    conns_.push_back(c);
    c->thread = std::thread([this, c] { serve(c); });
  }
}

void RendezvousServer::ping_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; })) {
    const auto conns = conns_;
    lock.unlock();
    for (auto& c : conns)
      if (c->rank > 0) c->send('P', "");
    lock.lock();
  }
}

void RendezvousServer::serve(std::shared_ptr<Conn> c) {
  char op = 0;
  std::string payload;
  while (read_message(c->fd, &op, &payload)) {
    if (op == 'S' || op == 'C') {
      const size_t nul = payload.find('\0');
      if (nul == std::string::npos) break;
      const std::string key = payload.substr(0, nul), value = payload.substr(nul + 1);
      bool existed = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        existed = store_.count(key) > 0;
        if (op == 'C' && existed)
          conflicts_.push_back(key);
        else
          store_[key] = value;
      }
      cv_.notify_all();
      c->send(op == 'C' && existed ? 'E' : 'V', "");
    } else if (op == 'G') {
      const auto timeout = std::chrono::milliseconds(unpack<int64_t>(payload));
      const std::string key = payload.size() > 8 ? payload.substr(8) : "";
      std::unique_lock<std::mutex> lock(mu_);
      const bool found = cv_.wait_for(lock, timeout, [&] { return stopping_ || store_.count(key) > 0; }) && !stopping_;
      const std::string value = found ? store_[key] : "";
      lock.unlock();
      c->send(found ? 'V' : 'T', value);
    } else if (op == 'K') {
      std::lock_guard<std::mutex> lock(mu_);
      c->rank = unpack<int32_t>(payload);
      said_bye_[c->rank] = false;
    } else if (op == 'H') {
      const Events ev = events();
      if (ev.heartbeat) ev.heartbeat(c->rank, unpack<uint64_t>(payload), unpack<uint64_t>(payload, 8));
    } else if (op == 'A') {
      const Events ev = events();
      if (ev.abort) ev.abort(c->rank, unpack<int32_t>(payload));
    } else if (op == 'B') {
      {
        std::lock_guard<std::mutex> lock(mu_);
        said_bye_[c->rank] = true;
      }
      cv_.notify_all();
    } else {
      break;  // not a Tandem rank: drop it
    }
  }
  Events ev;
  bool lost = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lost = c->rank > 0 && !said_bye_[c->rank] && !stopping_;
    ev = events_;
  }
  if (lost && ev.lost) ev.lost(c->rank);
}

std::vector<std::string> RendezvousServer::wait_keys(const std::vector<std::string>& keys,
                                                     std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto missing = [&] {
    std::vector<std::string> out;
    for (const auto& k : keys)
      if (!store_.count(k)) out.push_back(k);
    return out;
  };
  cv_.wait_until(lock, deadline, [&] { return missing().empty(); });
  return missing();
}

std::string RendezvousServer::value(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = store_.find(key);
  return it == store_.end() ? "" : it->second;
}

void RendezvousServer::set(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    store_[key] = value;
  }
  cv_.notify_all();
}

std::vector<std::string> RendezvousServer::conflicts() {
  std::lock_guard<std::mutex> lock(mu_);
  return conflicts_;
}

RendezvousServer::Events RendezvousServer::events() {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

void RendezvousServer::set_events(Events handlers) {
  std::lock_guard<std::mutex> lock(mu_);
  events_ = std::move(handlers);
}

void RendezvousServer::broadcast_abort(int code) {
  std::vector<std::shared_ptr<Conn>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    conns = conns_;
  }
  for (auto& c : conns)
    if (c->rank > 0) c->send('A', pack<int32_t>(code));
}

void RendezvousServer::wait_goodbyes(int size, std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, limit, [&] {
    for (int r = 1; r < size; ++r) {
      auto it = said_bye_.find(r);
      if (it != said_bye_.end() && !it->second) return false;
    }
    return true;
  });
}

// ---- the client -------------------------------------------------------------------------------

RendezvousClient::RendezvousClient(const std::string& host, int port, const std::string& who,
                                   std::chrono::steady_clock::time_point deadline)
    : peer_(host + ":" + std::to_string(port)) {
  std::string last = "no address";
  for (;;) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const int gai = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai != 0) {
      last = std::string("cannot resolve '") + host + "': " + ::gai_strerror(gai);
    } else {
      for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          fd_ = fd;
        } else {
          last = std::strerror(errno);
          ::close(fd);
        }
      }
      ::freeaddrinfo(res);
    }
    if (fd_ >= 0) break;
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(ErrorKind::Communication,
                  "could not reach the rendezvous at " + peer_ + " (" + who + ") before the timeout: " + last,
                  "start that task too (it serves the rendezvous), and check that this host can reach " + peer_ +
                      " (a firewall, a wrong address); the wait is --collective-timeout");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  char text[INET6_ADDRSTRLEN] = {0};
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    if (local.ss_family == AF_INET)
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&local)->sin_addr, text, sizeof(text));
    else
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr, text, sizeof(text));
  }
  local_address_ = text;
  // An IPv4 peer reached through a dual-stack socket shows as ::ffff:a.b.c.d.
  if (local_address_.rfind("::ffff:", 0) == 0) local_address_ = local_address_.substr(7);
}

RendezvousClient::~RendezvousClient() {
  closing_ = true;
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  if (fd_ >= 0) ::close(fd_);
}

void RendezvousClient::send_message(char op, const std::string& payload) {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (!write_message(fd_, op, payload) && !closing_)
    throw Error(ErrorKind::Communication, "the rendezvous at " + peer_ + " closed the connection",
                "rank 0 has ended; check its output");
}

std::string RendezvousClient::request(char op, const std::string& payload, char* reply_op) {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::string reply;
  if (!write_message(fd_, op, payload) || !read_message(fd_, reply_op, &reply))
    throw Error(ErrorKind::Communication, "the rendezvous at " + peer_ + " closed the connection during start-up",
                "rank 0 has ended; check its output");
  return reply;
}

void RendezvousClient::set(const std::string& key, const std::string& value) {
  char op = 0;
  request('S', key + '\0' + value, &op);
}

bool RendezvousClient::create(const std::string& key, const std::string& value) {
  char op = 0;
  request('C', key + '\0' + value, &op);
  return op == 'V';
}

std::string RendezvousClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  char op = 0;
  std::string value = request('G', pack<int64_t>(timeout.count()) + key, &op);
  if (op != 'V')
    throw Error(
        ErrorKind::Communication,
        "the rendezvous at " + peer_ + " had no '" + key + "' after " + std::to_string(timeout.count() / 1000) + " s",
        "a worker did not start or could not connect; check every worker's output");
  return value;
}

void RendezvousClient::start_control(int rank, std::chrono::milliseconds silence, std::function<void(int)> on_abort,
                                     std::function<void(double)> on_lost) {
  send_message('K', pack<int32_t>(rank));
  if (rank == 0) return;  // rank 0 is the server: it needs no pings from itself
  reader_ = std::thread([this, silence, on_abort, on_lost] { reader_loop(silence, on_abort, on_lost); });
}

void RendezvousClient::reader_loop(std::chrono::milliseconds silence, std::function<void(int)> on_abort,
                                   std::function<void(double)> on_lost) {
  auto heard = std::chrono::steady_clock::now();
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, 200);
    if (closing_) return;
    const auto now = std::chrono::steady_clock::now();
    if (n > 0) {
      char op = 0;
      std::string payload;
      if (!read_message(fd_, &op, &payload)) {
        if (!closing_) on_lost(-1);
        return;
      }
      heard = now;
      if (op == 'A') on_abort(unpack<int32_t>(payload));
    } else if (now - heard > silence) {
      on_lost(std::chrono::duration<double>(now - heard).count());
      return;
    }
  }
}

void RendezvousClient::heartbeat(uint64_t seq, uint64_t step) { send_message('H', pack(seq) + pack(step)); }
void RendezvousClient::send_abort(int code) { send_message('A', pack<int32_t>(code)); }
void RendezvousClient::goodbye() {
  send_message('B', "");
  closing_ = true;
}

}  // namespace tandem

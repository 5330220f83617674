// The rendezvous of a job launched without MPI (TF_CONFIG, torchrun): a small key-value store over
// TCP that rank 0 serves at its advertised address and every rank (rank 0 included) connects to.
// Start-up goes through it: each rank registers, rank 0 checks that all arrived with the same
// configuration and publishes the roster, and Gloo exchanges its transport addresses through it.
// Afterwards the same connections are the job's control plane: heartbeats for the stall watchdog,
// the abort that ends every rank, and a rank's death seen at once as its connection closing.
// docs/ARCHITECTURE.md §12.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tandem {

// Rank 0's side. Listens on every interface at `port`; throws Error(InvalidArgument) naming
// `field` if the port cannot be bound.
class RendezvousServer {
 public:
  RendezvousServer(int port, const std::string& field);
  ~RendezvousServer();
  RendezvousServer(const RendezvousServer&) = delete;
  RendezvousServer& operator=(const RendezvousServer&) = delete;

  // Waits until every key exists or the deadline passes; returns the keys still missing.
  std::vector<std::string> wait_keys(const std::vector<std::string>& keys,
                                     std::chrono::steady_clock::time_point deadline);
  std::string value(const std::string& key);  // "" if absent
  void set(const std::string& key, const std::string& value);
  // Keys whose registration came twice ("rank/3"), for the roster check.
  std::vector<std::string> conflicts();

  // Control plane. `on_heartbeat(rank, seq, step)`, `on_lost(rank)` (a registered rank's connection
  // closed before it said goodbye), `on_abort(rank, code)` (a rank asked to end the job). Called
  // from the server's threads.
  struct Events {
    std::function<void(int, uint64_t, uint64_t)> heartbeat;
    std::function<void(int)> lost;
    std::function<void(int, int)> abort;
  };
  void set_events(Events handlers);
  // Tells every connected rank to end with `code`.
  void broadcast_abort(int code);
  // Waits (bounded) until every rank in 1..size-1 that registered for control has said goodbye.
  void wait_goodbyes(int size, std::chrono::milliseconds limit);

 private:
  struct Conn;
  void accept_loop();
  void serve(std::shared_ptr<Conn> c);
  void ping_loop();
  Events events();  // a copy, taken under the lock, to call outside it

  int listen_fd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, std::string> store_;
  std::vector<std::string> conflicts_;
  std::vector<std::shared_ptr<Conn>> conns_;
  std::map<int, bool> said_bye_;
  Events events_;
  std::thread acceptor_, pinger_;
};

// Every rank's side: one connection to rank 0's server.
class RendezvousClient {
 public:
  // Connects to host:port, retrying until `deadline` (rank 0 may start after the others). Throws
  // Error(Communication) naming the address and `who` ("the chief, worker 0 (h1:2222)") if it
  // cannot be reached in time.
  RendezvousClient(const std::string& host, int port, const std::string& who,
                   std::chrono::steady_clock::time_point deadline);
  ~RendezvousClient();
  RendezvousClient(const RendezvousClient&) = delete;
  RendezvousClient& operator=(const RendezvousClient&) = delete;

  void set(const std::string& key, const std::string& value);
  bool create(const std::string& key, const std::string& value);  // false if the key existed
  // Waits for the key up to `timeout`; throws Error(Communication) on timeout.
  std::string get(const std::string& key, std::chrono::milliseconds timeout);
  // The local address of this connection: the interface that reaches rank 0, where this rank's
  // collectives listen.
  std::string local_address() const { return local_address_; }

  // Switches the connection to the control plane for `rank`. `on_abort(code)` runs when rank 0 says
  // the job ends; `on_lost(seconds)` when rank 0's connection closes or it has been silent for
  // `silence` (pings come every second). Both are called from the client's reader thread.
  void start_control(int rank, std::chrono::milliseconds silence, std::function<void(int)> on_abort,
                     std::function<void(double)> on_lost);
  void heartbeat(uint64_t seq, uint64_t step);
  void send_abort(int code);
  void goodbye();

 private:
  void send_message(char op, const std::string& payload);
  std::string request(char op, const std::string& payload, char* reply_op);
  void reader_loop(std::chrono::milliseconds silence, std::function<void(int)> on_abort,
                   std::function<void(double)> on_lost);

  int fd_ = -1;
  std::string peer_;
  std::string local_address_;
  std::mutex write_mu_;
  std::thread reader_;
  std::atomic<bool> closing_{false};
};

}  // namespace tandem

// The Gloo communicator: the collectives of a job launched without MPI (TF_CONFIG, torchrun), over
// Gloo's TCP transport, wired up through Tandem's rendezvous (dist/rendezvous.h). Every collective of
// the Communicator interface; the stall watchdog judges heartbeats that travel on the rendezvous
// connections, which also carry the abort and show a rank's death the moment its process ends.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "dist/communicator.h"
#include "dist/launch_env.h"
#include "dist/rank_agreement.h"
#include "dist/rendezvous.h"
#include "dist/stall_judge.h"
#include "engine/errors.h"

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Gloo's store interface over the rendezvous connection.
class ClientStore final : public gloo::rendezvous::Store {
 public:
  ClientStore(RendezvousClient& client, milliseconds timeout) : client_(client), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    client_.set(key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const std::string v = client_.get(key, timeout_);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    for (const auto& k : keys) client_.get(k, std::max(timeout, timeout_));
  }

 private:
  RendezvousClient& client_;
  milliseconds timeout_;
};

// The start-up error for a rank whose launch describes another cluster than rank 0's.
std::string other_configuration(const std::string& who, const std::string& source, const std::string& theirs,
                                const std::string& rank0s) {
  return who + " was started with another " + source + " than rank 0: '" + theirs + "' where rank 0 has '" + rank0s +
         "'";
}

[[noreturn]] void end_process(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(const LaunchEnv& env, double timeout_s);
  ~GlooCommunicator() override;

  std::string name() const override { return "gloo"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  int nodes() const override { return nodes_; }

  void all_reduce_sum(float* data, size_t n) override { reduce(world_, data, n); }
  void all_reduce_sum(double* data, size_t n) override { reduce(world_, data, n); }
  void tree_all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    Entered entered(*this);
    guarded("tree all-reduce", [&] { tree_on(world_, data, n, scratch_); });
  }
  void broadcast(void* data, size_t bytes, int root) override { broadcast_on(world_, data, bytes, root); }
  void all_gather(const void* in, size_t bytes, void* out) override {
    Entered entered(*this);
    guarded("all-gather", [&] {
      gloo::AllgatherOptions opts(world_);
      opts.setInput(static_cast<uint8_t*>(const_cast<void*>(in)), bytes);
      opts.setOutput(static_cast<uint8_t*>(out), bytes * static_cast<size_t>(size_));
      opts.setTag(next_tag());
      gloo::allgather(opts);
    });
  }
  void barrier() override {
    Entered entered(*this);
    guarded("barrier", [&] {
      gloo::BarrierOptions opts(world_);
      opts.setTag(next_tag());
      gloo::barrier(opts);
    });
  }
  void node_broadcast(void* data, size_t bytes) override { broadcast_on(node_, data, bytes, 0); }
  void cross_node_all_reduce_sum(float* data, size_t n) override { reduce(cross_, data, n); }

  void start_watchdog(double timeout_s) override;
  void note_step(uint64_t step) override { step_.store(step, std::memory_order_relaxed); }
  std::string ranks_behind(uint64_t step) override {
    std::lock_guard<std::mutex> lock(heard_mu_);
    return ranks_before(heard_step_, step);
  }
  void set_abort_hook(std::function<void()> hook) override {
    std::lock_guard<std::mutex> lock(heard_mu_);
    abort_hook_ = std::move(hook);
  }
  [[noreturn]] void abort(int code) override;

 private:
  // Runs one Gloo call; its exceptions become one Communication error naming the collective.
  template <typename F>
  void guarded(const char* what, F&& f) {
    std::lock_guard<std::mutex> lock(op_mu_);
    try {
      f();
    } catch (const gloo::Exception& e) {
      throw Error(ErrorKind::Communication,
                  std::string("gloo ") + what + " failed on rank " + std::to_string(rank_) + ": " + e.what(),
                  "another worker may have ended or its network is down; check every worker's output");
    }
  }
  uint32_t next_tag() { return tag_++; }

  // Sums over the ranks of `ctx`. With a power-of-2 number of ranks: recursive halving and doubling
  // over Gloo's pairwise sends (the fixed tree of tree_all_reduce_sum), whose latency is a few
  // messages; Gloo's own ring all-reduce costs ~300 us even for 4 KiB (benchmarks/RESULTS.md).
  // Otherwise Gloo's ring. Either way every rank ends with the same bits.
  template <typename T>
  void reduce(const std::shared_ptr<gloo::Context>& ctx, T* data, size_t n) {
    if (!ctx || ctx->size == 1 || n == 0) return;
    Entered entered(*this);
    guarded("all-reduce", [&] {
      if ((ctx->size & (ctx->size - 1)) == 0) {
        tree_on(ctx, data, n, scratch<T>());
        return;
      }
      gloo::AllreduceOptions opts(ctx);
      opts.setOutput(data, n);
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
      opts.setTag(next_tag());
      gloo::allreduce(opts);
    });
  }
  template <typename T>
  std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>)
      return scratch_;
    else
      return scratch_double_;
  }
  template <typename T>
  void tree_on(const std::shared_ptr<gloo::Context>& ctx, T* data, size_t n, std::vector<T>& scratch) {
    tree_all_reduce_by_exchange<T>(ctx->rank, ctx->size, data, n, scratch,
                                   [&](const T* send, size_t send_n, T* recv, size_t recv_n, int peer) {
                                     exchange(*ctx, send, send_n * sizeof(T), recv, recv_n * sizeof(T), peer);
                                   });
  }
  void broadcast_on(const std::shared_ptr<gloo::Context>& ctx, void* data, size_t bytes, int root) {
    if (!ctx || ctx->size == 1 || bytes == 0) return;
    Entered entered(*this);
    guarded("broadcast", [&] {
      gloo::BroadcastOptions opts(ctx);
      opts.setOutput(static_cast<uint8_t*>(data), bytes);
      opts.setRoot(root);
      opts.setTag(next_tag());
      gloo::broadcast(opts);
    });
  }
  // Sends `send_bytes` to `peer` while receiving `recv_bytes` from it (the tree's pairs).
  void exchange(gloo::Context& ctx, const void* send, size_t send_bytes, void* recv, size_t recv_bytes, int peer) {
    // Slots count per context: the members of a group run the same exchanges on it in the same order.
    const uint64_t slot = (uint64_t(0x7d) << 56) | tree_slots_[&ctx]++;
    std::unique_ptr<gloo::transport::UnboundBuffer> out, in;
    if (send_bytes) {
      out = ctx.createUnboundBuffer(const_cast<void*>(send), send_bytes);
      out->send(peer, slot);
    }
    if (recv_bytes) {
      in = ctx.createUnboundBuffer(recv, recv_bytes);
      in->recv(peer, slot);
      if (!in->waitRecv(op_timeout_)) throw gloo::IoException("receive aborted");
    }
    if (out && !out->waitSend(op_timeout_)) throw gloo::IoException("send aborted");
  }

  struct Entered {
    explicit Entered(GlooCommunicator& c) : c_(c) { c_.seq_.fetch_add(1, std::memory_order_relaxed); }
    GlooCommunicator& c_;
  };

  void register_and_check(const LaunchEnv& env, Clock::time_point deadline);
  std::shared_ptr<gloo::Context> connect(const std::string& prefix, int rank, int size);
  void watchdog_loop();
  void on_lost_rank(int rank);
  void on_rank_abort(int rank, int code);
  void tell_others(int code);

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, nodes_ = 1;
  double timeout_s_;
  milliseconds op_timeout_;
  std::vector<std::string> hosts_, names_;
  std::unique_ptr<RendezvousServer> server_;  // rank 0
  std::unique_ptr<RendezvousClient> client_;
  std::unique_ptr<ClientStore> store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> world_, node_, cross_;
  std::mutex op_mu_;
  uint32_t tag_ = 1;
  std::map<const gloo::Context*, uint64_t> tree_slots_;
  std::vector<float> scratch_;
  std::vector<double> scratch_double_;

  std::atomic<uint64_t> seq_{0}, step_{0};
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
  std::mutex heard_mu_;
  std::unique_ptr<StallJudge> judge_;  // rank 0, under heard_mu_
  std::vector<unsigned long long> heard_step_;
  std::function<void()> abort_hook_;
  std::atomic<bool> aborting_{false};
};

GlooCommunicator::GlooCommunicator(const LaunchEnv& env, double timeout_s)
    : rank_(env.rank),
      size_(env.size),
      timeout_s_(timeout_s),
      op_timeout_(static_cast<int64_t>((timeout_s + 10) * 1000)),
      names_(env.names) {
  const auto deadline = Clock::now() + milliseconds(static_cast<int64_t>(timeout_s * 1000));
  if (rank_ == 0)
    server_ = std::make_unique<RendezvousServer>(
        env.rendezvous_port, env.source == "TF_CONFIG" ? "TF_CONFIG " + env.names[0] : std::string("MASTER_PORT"));
  client_ =
      std::make_unique<RendezvousClient>(env.rendezvous_host, env.rendezvous_port, "rank 0, " + env.names[0], deadline);
  register_and_check(env, deadline);

  // Gloo listens on the interface that reaches rank 0, and exchanges its addresses through the store.
  gloo::transport::tcp::attr attr;
  attr.hostname = client_->local_address();
  try {
    device_ = gloo::transport::tcp::CreateDevice(attr);
  } catch (const gloo::Exception& e) {
    throw Error(ErrorKind::Communication, "gloo cannot listen on " + attr.hostname + ": " + e.what(),
                "check this host's network configuration");
  }
  store_ = std::make_unique<ClientStore>(*client_, op_timeout_);
  world_ = connect("world", rank_, size_);
  // Nodes: the ranks on one host name, in rank order; the cross-node groups: one rank of each node
  // with the same local rank.
  std::map<std::string, int> node_of;
  std::vector<int> node(size_), local(size_);
  std::map<int, int> count;
  for (int r = 0; r < size_; ++r) {
    node[r] = node_of.emplace(hosts_[r], static_cast<int>(node_of.size())).first->second;
    local[r] = count[node[r]]++;
  }
  local_rank_ = local[rank_];
  local_size_ = count[node[rank_]];
  int cross_rank = 0;
  nodes_ = 0;
  for (int r = 0; r < size_; ++r)
    if (local[r] == local_rank_) {
      if (r == rank_) cross_rank = nodes_;
      ++nodes_;
    }
  // Node groups first, then cross-node groups: each set of groups is disjoint, so none waits on another.
  if (local_size_ > 1) node_ = connect("node/" + std::to_string(node[rank_]), local_rank_, local_size_);
  if (nodes_ > 1) cross_ = connect("cross/" + std::to_string(local_rank_), cross_rank, nodes_);
  // The control plane from here on (the connection carries no more store requests): a rank's death
  // or rank 0's abort ends every rank.
  set_distributed_job(rank_, [this](int code) {
    if (!aborting_.exchange(true)) tell_others(code);
  });
  if (rank_ == 0) {
    RendezvousServer::Events ev;
    ev.heartbeat = [this](int r, uint64_t seq, uint64_t step) {
      std::lock_guard<std::mutex> lock(heard_mu_);
      if (judge_) judge_->heard(r, seq, step, steady_now_ns());
    };
    ev.lost = [this](int r) { on_lost_rank(r); };
    ev.abort = [this](int r, int code) { on_rank_abort(r, code); };
    server_->set_events(std::move(ev));
  }
  client_->start_control(
      rank_, op_timeout_,
      [this](int code) {
        if (aborting_.exchange(true)) return;
        std::fprintf(stderr, "[rank %d] tandem: the job was ended by another rank (status %d); this rank ends too\n",
                     rank_, code);
        end_process(code);
      },
      [this](double silent_s) {
        if (aborting_.exchange(true)) return;
        if (silent_s < 0)
          std::fprintf(stderr,
                       "[rank %d] tandem: communication error: rank 0 (%s) is gone: its rendezvous connection closed "
                       "mid-job; this rank ends\n  hint: check rank 0's output\n",
                       rank_, hosts_[0].c_str());
        else
          std::fprintf(stderr,
                       "[rank %d] tandem: communication error: unreachable: rank 0 (%s) sent nothing for %.0f s; this "
                       "rank ends\n  hint: the host of rank 0 or the network to it is down\n",
                       rank_, hosts_[0].c_str(), silent_s);
        end_process(3);
      });
}

std::shared_ptr<gloo::Context> GlooCommunicator::connect(const std::string& prefix, int rank, int size) {
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
  ctx->setTimeout(op_timeout_);
  gloo::rendezvous::PrefixStore store(prefix, *store_);
  try {
    ctx->connectFullMesh(store, device_);
  } catch (const gloo::Exception& e) {
    throw Error(ErrorKind::Communication, "gloo could not connect the ranks (" + prefix + "): " + e.what(),
                "check that the workers' hosts can reach each other on any TCP port");
  }
  return ctx;
}

// Every rank registers under its rank; rank 0 waits for all of them (bounded), compares what each
// was started with, and publishes the roster (each rank's host) or the error every rank then reports.
void GlooCommunicator::register_and_check(const LaunchEnv& env, Clock::time_point deadline) {
  const nlohmann::json me = {{"rank", rank_},          {"size", size_},       {"source", env.source},
                             {"cluster", env.cluster}, {"host", this_host()}, {"pid", static_cast<long>(::getpid())}};
  const std::string key = "rank/" + std::to_string(rank_);
  if (!client_->create(key, me.dump()))
    throw_invalid("another process already registered as " + env.names[rank_] + " at the rendezvous",
                  "each worker needs its own task (TF_CONFIG task.index, or RANK): two were started with the same one");
  nlohmann::json roster;
  if (rank_ == 0) {
    std::vector<std::string> keys;
    for (int r = 1; r < size_; ++r) keys.push_back("rank/" + std::to_string(r));
    const auto missing = server_->wait_keys(keys, deadline);
    std::string error, kind = "communication";
    if (!missing.empty()) {
      std::string names;
      for (const auto& k : missing) names += (names.empty() ? "" : ", ") + env.names[std::stoi(k.substr(5))];
      error = std::to_string(missing.size()) + " of " + std::to_string(size_) +
              " ranks never reached the rendezvous at port " + std::to_string(env.rendezvous_port) + " within " +
              std::to_string(static_cast<int>(timeout_s_)) + " s (--collective-timeout): " + names;
    }
    for (const auto& k : server_->conflicts())
      if (error.empty()) {
        error = "two processes registered as " + env.names[std::stoi(k.substr(5))] + " (the same " +
                (env.source == "TF_CONFIG" ? "task.index" : "RANK") + ")";
        kind = "invalid";
      }
    std::vector<std::string> hosts;
    for (int r = 0; r < size_ && error.empty(); ++r) {
      const auto other = r == 0 ? me : nlohmann::json::parse(server_->value("rank/" + std::to_string(r)));
      hosts.push_back(other.value("host", std::string("?")));
      if (other.value("cluster", std::string()) != env.cluster || other.value("source", std::string()) != env.source) {
        error = other_configuration(env.names[r] + " on host " + hosts.back(), other.value("source", std::string()),
                                    other.value("cluster", std::string()), env.cluster);
        kind = "invalid";
      }
    }
    roster = error.empty() ? nlohmann::json{{"hosts", hosts}, {"cluster", env.cluster}}
                           : nlohmann::json{{"error", error}, {"kind", kind}};
    server_->set("roster", roster.dump());
    if (!error.empty()) {
      // Let the ranks that did arrive read the error before this process (their rendezvous) ends.
      std::vector<std::string> seen;
      for (int r = 1; r < size_; ++r)
        if (!server_->value("rank/" + std::to_string(r)).empty()) seen.push_back("seen/" + std::to_string(r));
      server_->wait_keys(seen, Clock::now() + std::chrono::seconds(5));
    }
  } else {
    roster = nlohmann::json::parse(client_->get("roster", op_timeout_));
    client_->set("seen/" + std::to_string(rank_), "");
    if (!roster.contains("error") && roster.value("cluster", std::string()) != env.cluster)
      roster = {{"kind", "invalid"},
                {"error", other_configuration(env.names[rank_], env.source, env.cluster,
                                              roster.value("cluster", std::string()))}};
  }
  if (roster.contains("error")) {
    const std::string hint =
        env.source == "TF_CONFIG"
            ? "start every worker with the same TF_CONFIG cluster, each with its own task, and check that each can "
              "reach rank 0's address"
            : "start every worker with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, each with its own RANK";
    throw Error(roster["kind"] == "invalid" ? ErrorKind::InvalidArgument : ErrorKind::Communication,
                roster["error"].get<std::string>(), hint);
  }
  hosts_ = roster["hosts"].get<std::vector<std::string>>();
}

GlooCommunicator::~GlooCommunicator() {
  {
    std::lock_guard<std::mutex> lock(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (std::uncaught_exceptions() > 0) {
    // Ending on an error: the other ranks end too (tools/tandem.cpp prints this rank's error).
    abort_job_if_distributed(1);
  } else if (rank_ == 0) {
    server_->wait_goodbyes(size_, std::chrono::seconds(30));
  } else {
    aborting_ = true;
    client_->goodbye();
  }
  set_distributed_job(rank_, {});
  world_.reset();
  node_.reset();
  cross_.reset();
  device_.reset();
  client_.reset();
  if (rank_ == 0 && std::uncaught_exceptions() > 0) std::this_thread::sleep_for(milliseconds(200));
  server_.reset();
}

void GlooCommunicator::start_watchdog(double timeout_s) {
  if (size_ == 1 || watchdog_.joinable()) return;
  timeout_s_ = timeout_s;
  if (rank_ == 0) {
    std::lock_guard<std::mutex> lock(heard_mu_);
    judge_ = std::make_unique<StallJudge>(hosts_, timeout_s, steady_now_ns());
  }
  watchdog_ = std::thread([this] { watchdog_loop(); });
}

// Every rank but 0 sends (collectives entered, step) when it changes, checked every 20 ms, and at
// least once a second; rank 0 judges them (StallJudge) and ends the job on a stall.
void GlooCommunicator::watchdog_loop() {
  const auto period = milliseconds(20);
  HeartbeatSchedule heartbeat(timeout_s_);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(watchdog_mu_);
      if (watchdog_cv_.wait_for(lock, period, [this] { return watchdog_stop_; })) return;
    }
    const int64_t now = steady_now_ns();
    const uint64_t my_seq = seq_.load(std::memory_order_relaxed), my_step = step_.load(std::memory_order_relaxed);
    if (rank_ != 0) {
      if (heartbeat.due(my_seq, my_step, now)) {
        try {
          client_->heartbeat(my_seq, my_step);
        } catch (const Error&) {
          return;  // rank 0 is gone: the reader thread reports it
        }
        heartbeat.sent(my_seq, my_step, now);
      }
      continue;
    }
    std::string report;
    {
      std::lock_guard<std::mutex> lock(heard_mu_);
      report = judge_->verdict(my_seq, my_step, now);
      heard_step_ = judge_->steps();
    }
    if (!report.empty()) {
      std::fprintf(stderr, "tandem: communication error: %s\n", report.c_str());
      abort(3);
    }
  }
}

void GlooCommunicator::on_lost_rank(int r) {
  if (aborting_.load()) return;
  std::fprintf(stderr,
               "tandem: communication error: rank %d (%s, %s) is gone: its connection to rank 0 closed mid-job (the "
               "process ended or was killed); ending every rank\n  hint: check that rank's output and its host\n",
               r, names_[static_cast<size_t>(r)].c_str(),
               hosts_.empty() ? "?" : hosts_[static_cast<size_t>(r)].c_str());
  abort(3);
}

void GlooCommunicator::on_rank_abort(int r, int code) {
  // A rank that ends on an error often reports a peer that has died (its connection reset): give
  // that death half a second to show, so that the report names the rank that is gone.
  std::this_thread::sleep_for(milliseconds(500));
  if (aborting_.exchange(true)) return;
  std::fprintf(stderr, "[rank 0] tandem: rank %d ended the job (status %d); ending every rank\n", r, code);
  abort(code);
}

// Rank 0 tells every rank to end; another rank asks rank 0 to (it relays the abort).
void GlooCommunicator::tell_others(int code) {
  try {
    if (rank_ == 0)
      server_->broadcast_abort(code);
    else
      client_->send_abort(code);
  } catch (const Error&) {
    // rank 0 is gone already: nothing left to tell
  }
}

void GlooCommunicator::abort(int code) {
  std::function<void()> hook;
  {
    std::lock_guard<std::mutex> lock(heard_mu_);
    hook.swap(abort_hook_);
  }
  if (hook) hook();
  aborting_ = true;
  tell_others(code);
  std::this_thread::sleep_for(milliseconds(100));
  end_process(code);
}

}  // namespace

bool gloo_available() { return true; }

std::unique_ptr<Communicator> make_gloo_communicator(const LaunchEnv& env, double timeout_s) {
  return std::make_unique<GlooCommunicator>(env, timeout_s);
}

}  // namespace tandem

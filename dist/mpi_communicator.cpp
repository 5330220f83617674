// The MPI communicator: flat MPI_Allreduce, or the two-level algorithm for several nodes.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/rank_agreement.h"
#include "dist/stall_judge.h"
#include "engine/errors.h"

namespace tandem {

namespace {

[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  throw Error(ErrorKind::Communication,
              std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " + std::string(msg, len),
              "a rank may have died or the launch is inconsistent; check every rank's output");
}

#define MPI_CHECK(call)                                      \
  do {                                                       \
    int rc_ = (call);                                        \
    if (rc_ != MPI_SUCCESS) mpi_fail(rc_, #call, __FILE__, __LINE__); \
  } while (0)

// srun starts each task itself and hands it its rank through a PMI plugin. Open MPI (Debian's)
// speaks PMIx only: under `srun --mpi=none` or `--mpi=pmi2` MPI_Init cannot wire the tasks up and
// fails with a message about rebuilding Open MPI. Say what to change instead.
void refuse_srun_without_pmix() {
  const char* tasks = std::getenv("SLURM_STEP_NUM_TASKS");
  if (!tasks || std::atoi(tasks) <= 1 || std::getenv("PMIX_RANK") || std::getenv("OMPI_COMM_WORLD_SIZE")) return;
  throw Error(ErrorKind::InvalidArgument,
              std::string("srun started ") + tasks +
                  " tasks without PMIx (the step's --mpi is not pmix), so MPI "
                  "cannot tell them their ranks",
              "launch with `srun --mpi=pmix ...` (or set MpiDefault=pmix in slurm.conf), or run mpirun inside the "
              "allocation (salloc/sbatch)");
}

// MPI lives for the whole process: initialised on first use, finalised at exit.
struct MpiSession {
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      refuse_srun_without_pmix();
      // The communication thread shares cores with the compute threads: an MPI that spins while
      // it waits for the other ranks takes CPU from backward. OpenMPI yields when asked to (this
      // is what it does by itself when oversubscribed); a value the user set wins.
      setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
      // MULTIPLE: the watchdog thread talks to rank 0 while another thread is in a collective.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      if (provided < MPI_THREAD_SERIALIZED)
        throw Error(ErrorKind::Communication, "the MPI library does not support MPI_THREAD_SERIALIZED",
                    "use an MPI built with thread support (OpenMPI is)");
      owned = true;
    } else {
      MPI_Query_thread(&provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned && !finalized) MPI_Finalize();
  }
  bool owned = false;
  int provided = 0;
};

MpiSession& session() {
  static MpiSession s;
  return s;
}

bool g_session_started = false;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(bool hierarchical) {
    session();
    g_session_started = true;
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &ctl_));
    MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(ctl_, MPI_ERRORS_RETURN);
    MPI_CHECK(MPI_Comm_rank(world_, &rank_));
    MPI_CHECK(MPI_Comm_size(world_, &size_));
    const char* per_node = std::getenv("TANDEM_RANKS_PER_NODE");
    if (per_node && *per_node) {
      char* end = nullptr;
      long k = std::strtol(per_node, &end, 10);
      if (*end != '\0' || k <= 0 || size_ % k != 0)
        throw_invalid("TANDEM_RANKS_PER_NODE=" + std::string(per_node) + " must divide the " +
                          std::to_string(size_) + " ranks evenly",
                      "unset it to use the real node layout");
      MPI_CHECK(MPI_Comm_split(world_, static_cast<int>(rank_ / k), rank_, &node_));
    } else {
      MPI_CHECK(MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_));
    }
    MPI_CHECK(MPI_Comm_rank(node_, &local_rank_));
    MPI_CHECK(MPI_Comm_size(node_, &local_size_));
    MPI_CHECK(MPI_Comm_split(world_, local_rank_, rank_, &cross_));
    MPI_CHECK(MPI_Comm_size(cross_, &nodes_));
    // Two levels only help (and only work) with several nodes of equal size.
    int min_local = 0, max_local = 0;
    MPI_CHECK(MPI_Allreduce(&local_size_, &min_local, 1, MPI_INT, MPI_MIN, world_));
    MPI_CHECK(MPI_Allreduce(&local_size_, &max_local, 1, MPI_INT, MPI_MAX, world_));
    hierarchical_ = hierarchical && nodes_ > 1 && local_size_ > 1 && min_local == max_local;
  }
  ~MpiCommunicator() override {
    stop_watchdog();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (MPI_Comm* c : {&cross_, &node_, &ctl_, &world_})
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }

  std::string name() const override { return hierarchical_ ? "mpi-hierarchical" : "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  int nodes() const override { return nodes_; }

  void all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    Entered entered(*this);
    if (hierarchical_) return hierarchical_sum(data, n, MPI_FLOAT);
    reduce_chunked(data, n, MPI_FLOAT, sizeof(float), world_);
  }
  void all_reduce_sum(double* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    Entered entered(*this);
    reduce_chunked(data, n, MPI_DOUBLE, sizeof(double), world_);
  }
  void tree_all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    Entered entered(*this);
    tree_all_reduce_by_exchange<float>(rank_, size_, data, n, scratch_,
                                [this](const float* send, size_t send_n, float* recv, size_t recv_n, int peer) {
                                  exchange(send, send_n, recv, recv_n, peer);
                                });
  }
  void broadcast(void* data, size_t bytes, int root) override {
    Entered entered(*this);
    MPI_CHECK(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, world_));
  }
  void all_gather(const void* in, size_t bytes, void* out) override {
    Entered entered(*this);
    MPI_CHECK(MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, world_));
  }
  void barrier() override {
    Entered entered(*this);
    MPI_CHECK(MPI_Barrier(world_));
  }

  void node_broadcast(void* data, size_t bytes) override {
    Entered entered(*this);
    MPI_CHECK(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, 0, node_));
  }
  void cross_node_all_reduce_sum(float* data, size_t n) override {
    if (nodes_ == 1 || n == 0) return;
    Entered entered(*this);
    reduce_chunked(data, n, MPI_FLOAT, sizeof(float), cross_);
  }

  void start_watchdog(double timeout_s) override;
  std::string ranks_behind(uint64_t step) override {
    std::lock_guard<std::mutex> lock(heard_mu_);
    return ranks_before(heard_step_, step);
  }
  void set_abort_hook(std::function<void()> hook) override {
    std::lock_guard<std::mutex> lock(heard_mu_);
    abort_hook_ = std::move(hook);
  }
  void note_step(uint64_t step) override { step_.store(step, std::memory_order_relaxed); }

  [[noreturn]] void abort(int code) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(heard_mu_);
      hook.swap(abort_hook_);
    }
    if (hook) hook();
    // MPI_Abort reaches the other ranks through the launcher; across a network partition that can
    // block for good, so this rank ends itself a little later whatever MPI_Abort does.
    std::thread([code] {
      std::this_thread::sleep_for(std::chrono::seconds(10));
      std::_Exit(code);
    }).detach();
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  // MPI counts are ints: reduce very large buffers in pieces.
  void reduce_chunked(void* data, size_t n, MPI_Datatype type, size_t elem, MPI_Comm comm) {
    const size_t max_count = size_t(1) << 30;
    for (size_t off = 0; off < n; off += max_count) {
      int count = static_cast<int>(std::min(max_count, n - off));
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + off * elem, count, type, MPI_SUM, comm));
    }
  }

  // Sends `send_n` floats to `peer` while receiving `recv_n` from it (MPI counts are ints: in pieces).
  void exchange(const float* send, size_t send_n, float* recv, size_t recv_n, int peer) {
    const size_t max_count = size_t(1) << 30;
    for (size_t off = 0; off < std::max(send_n, recv_n); off += max_count) {
      const int sc = static_cast<int>(off < send_n ? std::min(max_count, send_n - off) : 0);
      const int rc = static_cast<int>(off < recv_n ? std::min(max_count, recv_n - off) : 0);
      MPI_CHECK(MPI_Sendrecv(send + (off < send_n ? off : 0), sc, MPI_FLOAT, peer, kTreeTag, recv + (off < recv_n ? off : 0),
                             rc, MPI_FLOAT, peer, kTreeTag, world_, MPI_STATUS_IGNORE));
    }
  }
  static constexpr int kTreeTag = 7401;

  // Reduce-scatter inside the node, all-reduce of each node's share across nodes, all-gather
  // inside the node: every rank ends with the same bits, and inter-node traffic is 1/local_size.
  void hierarchical_sum(float* data, size_t n, MPI_Datatype type) {
    std::vector<int> counts(local_size_), displs(local_size_);
    for (int i = 0; i < local_size_; ++i) {
      size_t lo = n * i / local_size_, hi = n * (i + 1) / local_size_;
      counts[i] = static_cast<int>(hi - lo);
      displs[i] = static_cast<int>(lo);
    }
    float* mine = data + displs[local_rank_];
    scratch_.resize(static_cast<size_t>(counts[local_rank_]));
    MPI_CHECK(MPI_Reduce_scatter(data, scratch_.data(), counts.data(), type, MPI_SUM, node_));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, scratch_.data(), counts[local_rank_], type, MPI_SUM, cross_));
    std::copy(scratch_.begin(), scratch_.end(), mine);
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, type, data, counts.data(), displs.data(), type, node_));
  }

  // Marks this rank as inside collective number seq_ (counted from 1) for the watchdog.
  struct Entered {
    explicit Entered(MpiCommunicator& c) : c_(c) {
      c_.seq_.fetch_add(1, std::memory_order_relaxed);
      c_.waiting_since_ns_.store(now_ns(), std::memory_order_relaxed);
    }
    ~Entered() { c_.waiting_since_ns_.store(0, std::memory_order_relaxed); }
    MpiCommunicator& c_;
  };
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void watchdog_loop(double timeout_s);
  void stop_watchdog();

  std::atomic<uint64_t> seq_{0}, step_{0};
  std::atomic<int64_t> waiting_since_ns_{0};  // 0: not in a collective
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
  std::mutex heard_mu_;
  std::vector<unsigned long long> heard_step_;  // rank 0: each rank's step, from its heartbeats
  std::function<void()> abort_hook_;
  std::vector<std::string> hosts_;  // each rank's host name (start_watchdog)

  MPI_Comm world_ = MPI_COMM_NULL, ctl_ = MPI_COMM_NULL, node_ = MPI_COMM_NULL, cross_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, nodes_ = 1;
  bool hierarchical_ = false;
  std::vector<float> scratch_;
};


void MpiCommunicator::start_watchdog(double timeout_s) {
  if (size_ == 1 || watchdog_.joinable()) return;
  // Every rank's host name, for naming the ranks the watchdog finds stalled or unreachable.
  char mine[64] = {0};
  std::snprintf(mine, sizeof(mine), "%s", this_host().c_str());
  std::vector<char> all(sizeof(mine) * static_cast<size_t>(size_));
  MPI_CHECK(MPI_Allgather(mine, sizeof(mine), MPI_CHAR, all.data(), sizeof(mine), MPI_CHAR, world_));
  hosts_.clear();
  for (int r = 0; r < size_; ++r) hosts_.emplace_back(all.data() + r * sizeof(mine));
  if (session().provided < MPI_THREAD_MULTIPLE) {
    if (rank_ == 0)
      std::fprintf(stderr, "tandem: warning: the MPI library lacks MPI_THREAD_MULTIPLE; the stall watchdog is off\n");
    return;
  }
  watchdog_ = std::thread([this, timeout_s] { watchdog_loop(timeout_s); });
}

void MpiCommunicator::stop_watchdog() {
  if (!watchdog_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
  watchdog_.join();
}

// Every rank sends (collectives entered, step) to rank 0 when it changes, checked every 20 ms, and
// at least once a second as a heartbeat, on the control communicator; rank 0 judges them
// (StallJudge: stalled and unreachable ranks). A rank that is itself stuck waiting with no word from rank 0 (rank 0
// frozen, or cut off from it) aborts on its own a little later.
void MpiCommunicator::watchdog_loop(double timeout_s) {
  constexpr int kTag = 7;
  const auto period = std::chrono::milliseconds(20);
  const int64_t timeout_ns = static_cast<int64_t>(timeout_s * 1e9);
  const int64_t grace_ns = timeout_ns + int64_t(10) * 1000000000;
  unsigned long long out[2] = {0, 0};
  MPI_Request send = MPI_REQUEST_NULL;
  HeartbeatSchedule heartbeat(timeout_s);
  StallJudge judge(hosts_, timeout_s, now_ns());
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(watchdog_mu_);
      if (watchdog_cv_.wait_for(lock, period, [this] { return watchdog_stop_; })) break;
    }
    const int64_t now = now_ns();
    const uint64_t my_step = step_.load(std::memory_order_relaxed);
    const uint64_t my_seq = seq_.load(std::memory_order_relaxed);
    if (rank_ != 0) {
      int done = 1;
      if (send != MPI_REQUEST_NULL) MPI_Test(&send, &done, MPI_STATUS_IGNORE);
      if (done && heartbeat.due(my_seq, my_step, now)) {
        out[0] = my_seq;
        out[1] = my_step;
        MPI_Isend(out, 2, MPI_UNSIGNED_LONG_LONG, 0, kTag, ctl_, &send);
        heartbeat.sent(my_seq, my_step, now);
      }
      const int64_t since = waiting_since_ns_.load(std::memory_order_relaxed);
      if (since != 0 && now - since > grace_ns) {
        std::fprintf(stderr,
                     "tandem: communication error: stall: rank %d has waited %.0f s in collective #%llu (step "
                     "%llu) and rank 0 has not named the missing ranks; aborting the job\n  hint: rank 0 may "
                     "be frozen; check its output\n",
                     rank_, double(now - since) / 1e9, static_cast<unsigned long long>(my_seq),
                     static_cast<unsigned long long>(my_step));
        std::fflush(stderr);
        abort(3);
      }
      continue;
    }
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kTag, ctl_, &flag, &st) != MPI_SUCCESS || !flag) break;
      unsigned long long in[2];
      MPI_Recv(in, 2, MPI_UNSIGNED_LONG_LONG, st.MPI_SOURCE, kTag, ctl_, MPI_STATUS_IGNORE);
      judge.heard(st.MPI_SOURCE, in[0], in[1], now);
    }
    const std::string report = judge.verdict(my_seq, my_step, now);
    {
      std::lock_guard<std::mutex> lock(heard_mu_);
      heard_step_ = judge.steps();
    }
    if (!report.empty()) {
      std::fprintf(stderr, "tandem: communication error: %s\n", report.c_str());
      std::fflush(stderr);
      abort(3);
    }
  }
  if (send != MPI_REQUEST_NULL) MPI_Wait(&send, MPI_STATUS_IGNORE);
}

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(bool hierarchical) {
  return std::make_unique<MpiCommunicator>(hierarchical);
}

void mpi_abort_job_if_running(int status) {
  if (!g_session_started) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, status);
}

int mpi_rank_if_running() {
  if (!g_session_started) return -1;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace tandem

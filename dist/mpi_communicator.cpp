// The MPI communicator: flat MPI_Allreduce, or the two-level algorithm for several nodes.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
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

// MPI lives for the whole process: initialised on first use, finalised at exit.
struct MpiSession {
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      if (provided < MPI_THREAD_SERIALIZED)
        throw Error(ErrorKind::Communication, "the MPI library does not support MPI_THREAD_SERIALIZED",
                    "use an MPI built with thread support (OpenMPI is)");
      owned = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned && !finalized) MPI_Finalize();
  }
  bool owned = false;
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
    int nodes = 0;
    MPI_CHECK(MPI_Comm_size(cross_, &nodes));
    // Two levels only help (and only work) with several nodes of equal size.
    int min_local = 0, max_local = 0;
    MPI_CHECK(MPI_Allreduce(&local_size_, &min_local, 1, MPI_INT, MPI_MIN, world_));
    MPI_CHECK(MPI_Allreduce(&local_size_, &max_local, 1, MPI_INT, MPI_MAX, world_));
    hierarchical_ = hierarchical && nodes > 1 && local_size_ > 1 && min_local == max_local;
  }
  ~MpiCommunicator() override {
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

  void all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    if (hierarchical_) return hierarchical_sum(data, n, MPI_FLOAT);
    reduce_chunked(data, n, MPI_FLOAT, sizeof(float), world_);
  }
  void all_reduce_sum(double* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    reduce_chunked(data, n, MPI_DOUBLE, sizeof(double), world_);
  }
  void broadcast(void* data, size_t bytes, int root) override {
    MPI_CHECK(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, world_));
  }
  void all_gather(const void* in, size_t bytes, void* out) override {
    MPI_CHECK(MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, world_));
  }
  void barrier() override { MPI_CHECK(MPI_Barrier(world_)); }

  void rendezvous(uint64_t tag, double timeout_s) override {
    if (size_ == 1) return;
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s);
    const int mpi_tag = static_cast<int>(tag % 30000) + 1;
    unsigned long long mine = tag;
    if (rank_ == 0) {
      std::vector<unsigned long long> got(size_);
      std::vector<MPI_Request> req(size_ - 1);
      for (int r = 1; r < size_; ++r)
        MPI_CHECK(MPI_Irecv(&got[r], 1, MPI_UNSIGNED_LONG_LONG, r, mpi_tag, ctl_, &req[r - 1]));
      std::vector<int> done(size_ - 1, 0);
      for (;;) {
        bool all = true;
        for (int i = 0; i < size_ - 1; ++i) {
          if (!done[i]) MPI_CHECK(MPI_Test(&req[i], &done[i], MPI_STATUS_IGNORE));
          all = all && done[i];
        }
        if (all) break;
        if (clock::now() > deadline) {
          std::string missing;
          for (int i = 0; i < size_ - 1; ++i)
            if (!done[i]) missing += (missing.empty() ? "" : ", ") + std::to_string(i + 1);
          std::fprintf(stderr,
                       "tandem: communication error: stall: rank(s) %s did not reach step %llu within %.0f s "
                       "(--collective-timeout); aborting the job\n  hint: check those ranks' output; a rank "
                       "may be stuck, overloaded or gone\n",
                       missing.c_str(), mine, timeout_s);
          std::fflush(stderr);
          abort(3);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      for (int r = 1; r < size_; ++r)
        if (got[r] != mine)
          throw Error(ErrorKind::Communication,
                      "rank " + std::to_string(r) + " is at step " + std::to_string(got[r]) + ", rank 0 at step " +
                          std::to_string(mine),
                      "the ranks have diverged; they must run the same program with the same flags");
      unsigned char go = 1;
      for (int r = 1; r < size_; ++r) MPI_CHECK(MPI_Send(&go, 1, MPI_BYTE, r, mpi_tag, ctl_));
    } else {
      MPI_CHECK(MPI_Send(&mine, 1, MPI_UNSIGNED_LONG_LONG, 0, mpi_tag, ctl_));
      unsigned char go = 0;
      MPI_Request req;
      MPI_CHECK(MPI_Irecv(&go, 1, MPI_BYTE, 0, mpi_tag, ctl_, &req));
      int done = 0;
      // Rank 0 reports the missing ranks at the deadline; give it a moment more to do so.
      const auto late = deadline + std::chrono::seconds(5);
      while (!done) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        if (clock::now() > late) {
          std::fprintf(stderr,
                       "tandem: communication error: stall: rank %d waited %.0f s at step %llu without hearing "
                       "from rank 0; aborting the job\n",
                       rank_, timeout_s, mine);
          std::fflush(stderr);
          abort(3);
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  [[noreturn]] void abort(int code) override {
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

  MPI_Comm world_ = MPI_COMM_NULL, ctl_ = MPI_COMM_NULL, node_ = MPI_COMM_NULL, cross_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool hierarchical_ = false;
  std::vector<float> scratch_;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(bool hierarchical) {
  return std::make_unique<MpiCommunicator>(hierarchical);
}

void abort_job_if_distributed(int status) {
  if (!g_session_started) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, status);
}

int distributed_rank() {
  if (!g_session_started) return -1;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace tandem

// NCCL gradient all-reduce: multi-worker (one GPU per rank) and mirrored (several GPUs, one
// process). See dist/nccl_gradient_sync.h.
#include "dist/nccl_gradient_sync.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "dist/rank_agreement.h"
#include "engine/errors.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace tandem {

namespace {

std::string nccl_hint(ncclResult_t r) {
  switch (r) {
    case ncclUnhandledCudaError: return "a CUDA call inside NCCL failed: check nvidia-smi and the driver";
    case ncclSystemError:
      return "a system call failed (network, shared memory, /dev/shm size): rerun with NCCL_DEBUG=INFO for details";
    case ncclInternalError: return "rerun with NCCL_DEBUG=INFO; this may be an NCCL bug";
    case ncclInvalidArgument:
    case ncclInvalidUsage: return "this is a Tandem bug (bad NCCL arguments); please report it";
    case ncclRemoteError: return "another rank failed or went away: check every rank's output";
    default: return "rerun with NCCL_DEBUG=INFO for details";
  }
}

[[noreturn]] void nccl_fail(ncclResult_t r, const char* call, const char* file, int line) {
  const char* last = ncclGetLastError(nullptr);
  throw Error(ErrorKind::Communication,
              "NCCL error at " + std::string(file) + ":" + std::to_string(line) + ": " + call + ": " +
                  ncclGetErrorString(r) + (last && *last ? std::string(" (") + last + ")" : std::string()),
              nccl_hint(r));
}

#define NCCL_CHECK(call)                                                  \
  do {                                                                    \
    ncclResult_t nccl_rc_ = (call);                                       \
    if (nccl_rc_ != ncclSuccess) nccl_fail(nccl_rc_, #call, __FILE__, __LINE__); \
  } while (0)

cudaStream_t stream_of(Backend& backend) { return static_cast<cudaStream_t>(cuda_native_stream(backend)); }

class NcclGradientSync final : public GradientSync {
 public:
  NcclGradientSync(Communicator& comm, std::vector<Bucket> buckets, Backend& backend, bool overlap, double timeout_s)
      : comm_(comm), buckets_(std::move(buckets)), overlap_(overlap), timeout_s_(timeout_s) {
    if (backend.device().kind != DeviceKind::Gpu)
      throw_invalid("the NCCL all-reduce needs GPU replicas, not '" + backend.name() + "'",
                    "use --device gpu with multi-worker, or the MPI all-reduce for CPU ranks");
    device_ = backend.device().index;
    compute_ = stream_of(backend);
    TANDEM_CUDA_CHECK(cudaSetDevice(device_));
    TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ready_.resize(buckets_.size());
    for (auto& e : ready_) TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    for (auto& p : ring_) TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&p, cudaEventDisableTiming));

    // Two levels when there are several nodes of several ranks: NCCL inside the node only.
    hierarchical_ = comm_.nodes() > 1 && comm_.local_size() > 1;
    const int nranks = hierarchical_ ? comm_.local_size() : comm_.size();
    const int me = hierarchical_ ? comm_.local_rank() : comm_.rank();
    ncclUniqueId id{};
    if (me == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    if (hierarchical_)
      comm_.node_broadcast(&id, sizeof(id));
    else
      comm_.broadcast(&id, sizeof(id), 0);
    NCCL_CHECK(ncclCommInitRank(&nccl_, nranks, id, me));
    comm_.set_abort_hook([this] { ncclCommAbort(nccl_); });
    comm_.start_watchdog(timeout_s);
    watchdog_ = std::thread([this] { watchdog_loop(); });
  }

  ~NcclGradientSync() override {
    comm_.set_abort_hook({});
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    TANDEM_CUDA_WARN(cudaSetDevice(device_));
    TANDEM_CUDA_WARN(cudaStreamSynchronize(stream_));
    if (nccl_) ncclCommDestroy(nccl_);
    for (auto& e : ready_) TANDEM_CUDA_WARN(cudaEventDestroy(e));
    for (auto& p : ring_) TANDEM_CUDA_WARN(cudaEventDestroy(p));
    TANDEM_CUDA_WARN(cudaEventDestroy(done_));
    TANDEM_CUDA_WARN(cudaStreamDestroy(stream_));
    if (host_) TANDEM_CUDA_WARN(cudaFreeHost(host_));
  }

  int world_size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }

  void begin_step(Backend&, float* grads, size_t, uint64_t step) override {
    comm_.note_step(step);
    grads_ = grads;
    step_ = step;
    next_ = 0;
  }

  void layer_done(size_t first_final_offset) override {
    if (!overlap_ || hierarchical_) return;
    while (next_ < buckets_.size() && buckets_[next_].begin >= first_final_offset) enqueue(next_++);
  }

  void all_reduce_gradients(Backend&, float* grads, size_t) override {
    TANDEM_CUDA_CHECK(cudaSetDevice(device_));
    grads_ = grads;
    if (hierarchical_) {
      for (size_t i = 0; i < buckets_.size(); ++i) hierarchical_bucket(buckets_[i]);
    } else {
      while (next_ < buckets_.size()) enqueue(next_++);
      // The optimizer (compute stream) starts when the last bucket is summed; the host goes on.
      TANDEM_CUDA_CHECK(cudaEventRecord(done_, stream_));
      TANDEM_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
    }
    track_step();
  }

  // BatchNormalization's moving statistics: a few floats per step, through the host and MPI
  // (the download waits for the step's compute; NCCL's ring is kept for the gradients).
  void all_reduce_state(Backend& backend, float* state, size_t n) override {
    if (comm_.size() == 1 || n == 0) return;
    staged_state_.resize(n);
    backend.download(staged_state_.data(), state, n * sizeof(float));
    comm_.all_reduce_sum(staged_state_.data(), n);
    backend.upload(state, staged_state_.data(), n * sizeof(float));
  }

  void all_reduce_metrics(double* values, int count) override {
    comm_.all_reduce_sum(values, static_cast<size_t>(count));
  }

  void require_agreement(const std::string& what, const std::string& value) override {
    require_same_on_all_ranks(comm_, what, value);
  }

 private:
  std::vector<float> staged_state_;

  void enqueue(size_t i) {
    const Bucket& b = buckets_[i];
    TANDEM_CUDA_CHECK(cudaSetDevice(device_));
    TANDEM_CUDA_CHECK(cudaEventRecord(ready_[i], compute_));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_[i], 0));
    NCCL_CHECK(ncclAllReduce(grads_ + b.begin, grads_ + b.begin, b.end - b.begin, ncclFloat, ncclSum, nccl_, stream_));
  }

  // Reduce-scatter in the node, MPI across nodes, all-gather in the node. The in-node share is
  // `shard` floats per rank; the few floats that do not divide evenly are summed in the node by an
  // all-reduce and across nodes with every rank's share.
  void hierarchical_bucket(const Bucket& b) {
    const size_t count = b.end - b.begin;
    const size_t L = static_cast<size_t>(comm_.local_size()), me = static_cast<size_t>(comm_.local_rank());
    const size_t shard = count / L, rest = count - shard * L;
    float* data = grads_ + b.begin;
    float* mine = data + me * shard;
    if (host_floats_ < shard + rest) {
      if (host_) TANDEM_CUDA_CHECK(cudaFreeHost(host_));
      host_ = nullptr;
      TANDEM_CUDA_CHECK(cudaMallocHost(&host_, (shard + rest) * sizeof(float)));
      host_floats_ = shard + rest;
    }
    TANDEM_CUDA_CHECK(cudaEventRecord(done_, compute_));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(stream_, done_, 0));
    NCCL_CHECK(ncclGroupStart());
    if (shard > 0) NCCL_CHECK(ncclReduceScatter(data, mine, shard, ncclFloat, ncclSum, nccl_, stream_));
    if (rest > 0)
      NCCL_CHECK(ncclAllReduce(data + shard * L, data + shard * L, rest, ncclFloat, ncclSum, nccl_, stream_));
    NCCL_CHECK(ncclGroupEnd());
    if (shard > 0)
      TANDEM_CUDA_CHECK(cudaMemcpyAsync(host_, mine, shard * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    if (rest > 0)
      TANDEM_CUDA_CHECK(
          cudaMemcpyAsync(host_ + shard, data + shard * L, rest * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    comm_.cross_node_all_reduce_sum(host_, shard + rest);
    if (shard > 0)
      TANDEM_CUDA_CHECK(cudaMemcpyAsync(mine, host_, shard * sizeof(float), cudaMemcpyHostToDevice, stream_));
    if (rest > 0)
      TANDEM_CUDA_CHECK(
          cudaMemcpyAsync(data + shard * L, host_ + shard, rest * sizeof(float), cudaMemcpyHostToDevice, stream_));
    if (shard > 0) NCCL_CHECK(ncclAllGather(mine, data, shard, ncclFloat, nccl_, stream_));
    TANDEM_CUDA_CHECK(cudaEventRecord(done_, stream_));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
  }

  // The watchdog sees each step's all-reduce through an event recorded after it. At most
  // kRing steps are in flight; the host waits for the oldest beyond that.
  void track_step() {
    uint64_t wait_for = 0;
    cudaEvent_t oldest = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_.size() == ring_.size()) {
        wait_for = pending_.front().seq;
        oldest = ring_[wait_for % ring_.size()];
      }
    }
    if (oldest) {
      TANDEM_CUDA_CHECK(cudaEventSynchronize(oldest));
      std::lock_guard<std::mutex> lock(mu_);
      while (!pending_.empty() && pending_.front().seq <= wait_for) pending_.pop_front();
    }
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t seq = next_seq_++;
    TANDEM_CUDA_CHECK(cudaEventRecord(ring_[seq % ring_.size()], stream_));
    pending_.push_back({seq, step_, std::chrono::steady_clock::now()});
  }

  void watchdog_loop() {
    cudaSetDevice(device_);
    const auto timeout = std::chrono::duration<double>(timeout_s_);
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(20), [this] { return stop_; })) return;
      while (!pending_.empty()) {
        cudaError_t q = cudaEventQuery(ring_[pending_.front().seq % ring_.size()]);
        if (q != cudaSuccess) break;
        pending_.pop_front();
      }
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(nccl_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
        std::fprintf(stderr, "tandem: communication error: rank %d: NCCL failed: %s\n  hint: %s\n", comm_.rank(),
                     ncclGetErrorString(async), nccl_hint(async).c_str());
        std::fflush(stderr);
        lock.unlock();
        comm_.abort(3);
      }
      if (pending_.empty() || std::chrono::steady_clock::now() - pending_.front().enqueued < timeout) continue;
      const uint64_t step = pending_.front().step;
      lock.unlock();
      const std::string behind = comm_.rank() == 0 ? comm_.ranks_behind(step) : std::string();
      if (behind.empty() && comm_.rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(5));  // rank 0 names them
      std::fprintf(stderr,
                   "tandem: communication error: stall: rank %d: the NCCL all-reduce of step %llu did not complete "
                   "within %.0f s (--collective-timeout)%s; aborting the job\n  hint: check every rank's output; a "
                   "rank may be stuck, overloaded or gone\n",
                   comm_.rank(), static_cast<unsigned long long>(step), timeout_s_,
                   behind.empty() ? "" : ("; rank(s) " + behind + " did not reach step " + std::to_string(step)).c_str());
      std::fflush(stderr);
      comm_.abort(3);
    }
  }

  struct Pending {
    uint64_t seq, step;
    std::chrono::steady_clock::time_point enqueued;
  };

  Communicator& comm_;
  std::vector<Bucket> buckets_;
  bool overlap_, hierarchical_ = false;
  double timeout_s_;
  int device_ = 0;
  cudaStream_t compute_ = nullptr, stream_ = nullptr;
  std::vector<cudaEvent_t> ready_;
  cudaEvent_t done_ = nullptr;
  std::array<cudaEvent_t, 8> ring_{};
  ncclComm_t nccl_ = nullptr;
  float* grads_ = nullptr;
  uint64_t step_ = 0;
  size_t next_ = 0;
  float* host_ = nullptr;
  size_t host_floats_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  uint64_t next_seq_ = 0;
  bool stop_ = false;
  std::thread watchdog_;
};

class NcclLocalReduce final : public LocalReduce {
 public:
  explicit NcclLocalReduce(const std::vector<Backend*>& backends) {
    for (Backend* b : backends) {
      if (b->device().kind != DeviceKind::Gpu)
        throw_invalid("the NCCL all-reduce needs GPU replicas, not '" + b->name() + "'");
      devices_.push_back(b->device().index);
    }
    if (std::set<int>(devices_.begin(), devices_.end()).size() != devices_.size())
      throw_invalid("NCCL needs distinct GPUs, one replica each", "list each GPU once in --devices");
    comms_.resize(devices_.size());
    NCCL_CHECK(ncclCommInitAll(comms_.data(), static_cast<int>(devices_.size()), devices_.data()));
  }
  ~NcclLocalReduce() override {
    for (ncclComm_t c : comms_)
      if (c) ncclCommDestroy(c);
  }

  void all_reduce(const std::vector<Backend*>& backends, const std::vector<float*>& grads, size_t n) override {
    NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < backends.size(); ++i) {
      TANDEM_CUDA_CHECK(cudaSetDevice(devices_[i]));
      NCCL_CHECK(ncclAllReduce(grads[i], grads[i], n, ncclFloat, ncclSum, comms_[i], stream_of(*backends[i])));
    }
    NCCL_CHECK(ncclGroupEnd());
  }

 private:
  std::vector<int> devices_;
  std::vector<ncclComm_t> comms_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<GradientSync> make_nccl_gradient_sync(Communicator& comm, const Model& model, Backend& backend,
                                                      size_t bucket_bytes, bool overlap, double timeout_s) {
  return std::make_unique<NcclGradientSync>(comm, plan_buckets(model, bucket_bytes), backend, overlap, timeout_s);
}

std::unique_ptr<LocalReduce> make_nccl_local_reduce(const std::vector<Backend*>& backends) {
  return std::make_unique<NcclLocalReduce>(backends);
}

}  // namespace tandem

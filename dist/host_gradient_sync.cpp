#include "dist/host_gradient_sync.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "dist/rank_agreement.h"
#include "engine/errors.h"
#include "engine/trace.h"

namespace tandem {

HostGradientSync::HostGradientSync(Communicator& comm, const Model& model, size_t bucket_bytes, bool overlap,
                                   double timeout_s)
    : HostGradientSync(comm, plan_buckets(model, bucket_bytes), overlap, timeout_s) {}

HostGradientSync::HostGradientSync(Communicator& comm, std::vector<Bucket> buckets, bool overlap, double timeout_s)
    : comm_(comm), buckets_(std::move(buckets)), overlap_(overlap), handoff_us_(buckets_.size(), -1) {
  comm_.start_watchdog(timeout_s);
  if (overlap_ && comm_.size() > 1) thread_ = std::thread([this] { comm_loop(); });
}

HostGradientSync::~HostGradientSync() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

namespace {
// Fault injection for the watchdog test: TANDEM_TEST_STALL="RANK:STEP" makes that rank hang
// before that step, as a rank stuck in I/O or a deadlock would. Read once, not on every step.
struct StallAt {
  int rank = -1;
  unsigned long long step = 0;
  StallAt() {
    const char* v = std::getenv("TANDEM_TEST_STALL");
    if (!v || std::sscanf(v, "%d:%llu", &rank, &step) != 2) rank = -1;
  }
};
const StallAt& stall_at() {
  static const StallAt s;
  return s;
}
}  // namespace

void HostGradientSync::begin_step(Backend& backend, float* grads, size_t n, uint64_t step) {
  if (comm_.size() == 1) return;
  if (stall_at().rank == comm_.rank() && stall_at().step == step)
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  comm_.note_step(step);  // names the step in a stall report
  host_memory_ = backend.device().kind == DeviceKind::Cpu;
  grads_ = grads;
  next_ready_ = 0;
  done_ = 0;
  active_ = overlap_ && host_memory_ && thread_.joinable();
  (void)n;
}

void HostGradientSync::reduce_bucket(size_t i, int64_t handed_off_us) {
  const Bucket& b = buckets_[i];
  const bool traced = trace::enabled();
  const int64_t from = handed_off_us >= 0 ? handed_off_us : traced ? trace::now_us() : 0;
  sum_over_ranks(grads_ + b.begin, b.end - b.begin);
  // From hand-off (the bucket's last gradient final) to completion: its wait in the queue shows.
  if (traced) trace::record("allreduce bucket", from, trace::now_us(), static_cast<int64_t>(i));
}

void HostGradientSync::sum_over_ranks(float* data, size_t n) {
  if (tree_)
    comm_.tree_all_reduce_sum(data, n);
  else
    comm_.all_reduce_sum(data, n);
}

void HostGradientSync::layer_done(size_t first_final_offset) {
  if (!active_) return;
  std::lock_guard<std::mutex> lock(mu_);
  bool added = false;
  const int64_t now = trace::enabled() ? trace::now_us() : -1;
  while (next_ready_ < buckets_.size() && buckets_[next_ready_].begin >= first_final_offset) {
    handoff_us_[next_ready_] = now;
    queue_.push_back(next_ready_++);
    added = true;
  }
  if (added) cv_.notify_one();
}

void HostGradientSync::comm_loop() {
  trace::name_thread("allreduce");
  for (;;) {
    size_t i;
    int64_t handed_off_us;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      i = queue_.front();
      queue_.pop_front();
      handed_off_us = handoff_us_[i];
    }
    try {
      reduce_bucket(i, handed_off_us);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_;
    }
    cv_done_.notify_all();
  }
}

void HostGradientSync::all_reduce_gradients(Backend& backend, float* grads, size_t n) {
  if (comm_.size() == 1) return;
  if (active_) {
    std::unique_lock<std::mutex> lock(mu_);
    active_ = false;
    if (done_ == next_ready_ && next_ready_ < buckets_.size()) {
      // The thread is idle: reduce what is left here rather than pay two thread hand-offs on
      // the step's critical path. Order is kept: everything handed over has completed.
      const size_t from = next_ready_;
      next_ready_ = done_ = buckets_.size();
      lock.unlock();
      for (size_t i = from; i < buckets_.size(); ++i) reduce_bucket(i);
      lock.lock();
    } else {
      const int64_t now = trace::enabled() ? trace::now_us() : -1;
      while (next_ready_ < buckets_.size()) {
        handoff_us_[next_ready_] = now;
        queue_.push_back(next_ready_++);
      }
      cv_.notify_one();
      cv_done_.wait(lock, [this] { return done_ == buckets_.size(); });
    }
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return;
  }
  if (host_memory_) {
    grads_ = grads;
    for (size_t i = 0; i < buckets_.size(); ++i) reduce_bucket(i);
    return;
  }
  // Device gradients: stage through the host (NCCL is the fast path for GPUs).
  staging_.resize(n);
  backend.download(staging_.data(), grads, n * sizeof(float));
  grads_ = staging_.data();
  for (size_t i = 0; i < buckets_.size(); ++i) reduce_bucket(i);
  backend.upload(grads, staging_.data(), n * sizeof(float));
}

void HostGradientSync::all_reduce_state(Backend& backend, float* state, size_t n) {
  if (comm_.size() == 1 || n == 0) return;
  if (backend.device().kind == DeviceKind::Cpu) {
    sum_over_ranks(state, n);
    return;
  }
  // Device memory: through the host, in the gradients' staging buffer (their step is done).
  staging_.resize(n);
  backend.download(staging_.data(), state, n * sizeof(float));
  sum_over_ranks(staging_.data(), n);
  backend.upload(state, staging_.data(), n * sizeof(float));
}

void HostGradientSync::all_reduce_metrics(double* values, int count) {
  comm_.all_reduce_sum(values, static_cast<size_t>(count));
}

void HostGradientSync::require_agreement(const std::string& what, const std::string& value) {
  require_same_on_all_ranks(comm_, what, value);
}

}  // namespace tandem

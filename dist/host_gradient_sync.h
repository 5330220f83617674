// The host gradient sync: gradients summed over ranks by the host communicator (MPI or Gloo), bucket
// by bucket (dist/buckets.h) on a communication thread while backward continues, in the same order
// on every rank. Its GPU counterpart is dist/nccl_gradient_sync.h.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/buckets.h"
#include "dist/communicator.h"
#include "engine/model.h"
#include "engine/trainer.h"

namespace tandem {

class HostGradientSync final : public GradientSync {
 public:
  // `timeout_s`: the communicator's stall watchdog (--collective-timeout).
  HostGradientSync(Communicator& comm, const Model& model, size_t bucket_bytes, bool overlap, double timeout_s);
  // Explicit buckets (benchmarks).
  HostGradientSync(Communicator& comm, std::vector<Bucket> buckets, bool overlap, double timeout_s);
  ~HostGradientSync() override;

  int world_size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }
  void begin_step(Backend& backend, float* grads, size_t n, uint64_t step) override;
  void layer_done(size_t first_final_offset) override;
  void all_reduce_gradients(Backend& backend, float* grads, size_t n) override;
  void all_reduce_state(Backend& backend, float* state, size_t n) override;
  void all_reduce_metrics(double* values, int count) override;
  void require_agreement(const std::string& what, const std::string& value) override;
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // Batch invariance: sum every bucket in the fixed tree over ranks (Communicator::
  // tree_all_reduce_sum) instead of MPI's own order. Buckets are element-wise, so their sizes do
  // not change the bits.
  void set_tree(bool on) { tree_ = on; }

 private:
  void comm_loop();
  // `handed_off_us`: when the bucket was queued (steady clock, for the timeline); -1: now.
  void reduce_bucket(size_t i, int64_t handed_off_us = -1);
  void sum_over_ranks(float* data, size_t n);  // in the tree when set_tree(true)
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  bool overlap_;
  std::vector<int64_t> handoff_us_;  // per bucket, under mu_
  bool tree_ = false;
  // Current step's state.
  float* grads_ = nullptr;
  bool host_memory_ = true;
  std::vector<float> staging_;  // for device gradients
  size_t next_ready_ = 0;       // buckets [0, next_ready_) have been handed to the thread
  size_t done_ = 0;             // buckets reduced so far
  bool active_ = false;
  std::mutex mu_;
  std::condition_variable cv_, cv_done_;
  std::deque<size_t> queue_;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace tandem

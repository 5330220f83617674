// An in-process communicator for dist/ unit tests: `size` ranks on threads of one process meet in a
// shared hub. Every collective is an exact all-gather followed by a reduction done here, in rank
// order, so a test knows the bits to expect; each rank records the collectives it entered, so a
// test can check that every rank issued the same ones in the same order.
#pragma once
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "engine/errors.h"

namespace tandem::test {

class FakeHub {
 public:
  explicit FakeHub(int size) : size_(size), slots_(static_cast<size_t>(size)) {}
  int size() const { return size_; }
  // Every rank's bytes, in rank order, once all ranks have called it.
  std::vector<std::vector<char>> gather(int rank, const void* data, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto* p = static_cast<const char*>(data);
    slots_[static_cast<size_t>(rank)].assign(p, p + bytes);
    const uint64_t generation = generation_;
    if (++arrived_ == size_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    return result_;
  }

 private:
  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<char>> slots_, result_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

class FakeCommunicator final : public Communicator {
 public:
  FakeCommunicator(FakeHub& hub, int rank) : hub_(hub), rank_(rank) {}
  std::string name() const override { return "fake"; }
  int rank() const override { return rank_; }
  int size() const override { return hub_.size(); }
  int local_rank() const override { return rank_; }
  int local_size() const override { return hub_.size(); }
  int nodes() const override { return 1; }
  void all_reduce_sum(float* data, size_t n) override { sum(data, n, "all_reduce(float)"); }
  void all_reduce_sum(double* data, size_t n) override { sum(data, n, "all_reduce(double)"); }
  void tree_all_reduce_sum(float* data, size_t n) override {
    log_.push_back("tree(" + std::to_string(n) + ")");
    const auto all = hub_.gather(rank_, data, n * sizeof(float));
    for (const auto& a : all)
      if (a.size() != n * sizeof(float))
        throw Error(ErrorKind::Communication, "the ranks entered a tree all-reduce with different sizes");
    // The pairwise tree: ranks 2i and 2i+1 first, then pairs of pairs.
    std::vector<std::vector<float>> level;
    for (const auto& a : all) level.emplace_back(as<float>(a));
    while (level.size() > 1) {
      std::vector<std::vector<float>> next;
      for (size_t i = 0; i + 1 < level.size(); i += 2) {
        next.push_back(level[i]);
        for (size_t k = 0; k < n; ++k) next.back()[k] += level[i + 1][k];
      }
      level.swap(next);
    }
    std::memcpy(data, level[0].data(), n * sizeof(float));
  }
  void broadcast(void* data, size_t bytes, int root) override {
    log_.push_back("broadcast(" + std::to_string(bytes) + ")");
    const auto all = hub_.gather(rank_, data, bytes);
    std::memcpy(data, all[static_cast<size_t>(root)].data(), bytes);
  }
  void all_gather(const void* in, size_t bytes, void* out) override {
    log_.push_back("all_gather(" + std::to_string(bytes) + ")");
    const auto all = hub_.gather(rank_, in, bytes);
    for (size_t r = 0; r < all.size(); ++r) std::memcpy(static_cast<char*>(out) + r * bytes, all[r].data(), bytes);
  }
  void barrier() override {
    log_.push_back("barrier");
    hub_.gather(rank_, nullptr, 0);
  }
  void node_broadcast(void* data, size_t bytes) override { broadcast(data, bytes, 0); }
  void cross_node_all_reduce_sum(float*, size_t) override {}  // one node
  void start_watchdog(double) override {}
  void note_step(uint64_t) override {}
  std::string ranks_behind(uint64_t) override { return ""; }
  void set_abort_hook(std::function<void()>) override {}
  [[noreturn]] void abort(int code) override {
    throw Error(ErrorKind::Communication, "fake communicator aborted with " + std::to_string(code));
  }
  // The collectives this rank entered, in order.
  const std::vector<std::string>& log() const { return log_; }

 private:
  template <typename T>
  static std::vector<T> as(const std::vector<char>& bytes) {
    std::vector<T> v(bytes.size() / sizeof(T));
    if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
  }
  template <typename T>
  void sum(T* data, size_t n, const char* what) {
    log_.push_back(std::string(what) + "(" + std::to_string(n) + ")");
    const auto all = hub_.gather(rank_, data, n * sizeof(T));
    for (const auto& a : all)
      if (a.size() != n * sizeof(T))
        throw Error(ErrorKind::Communication, "the ranks entered an all-reduce with different sizes");
    std::vector<T> out = as<T>(all[0]);
    for (size_t r = 1; r < all.size(); ++r) {
      const std::vector<T> x = as<T>(all[r]);
      for (size_t k = 0; k < n; ++k) out[k] += x[k];
    }
    std::memcpy(data, out.data(), n * sizeof(T));
  }
  FakeHub& hub_;
  const int rank_;
  std::vector<std::string> log_;
};

}  // namespace tandem::test

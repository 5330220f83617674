// A thread that runs a function every `seconds` until it is destroyed (the model manager's
// file-system poll and the config-file poll). Destruction wakes it at once and joins it.
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem::serve {

class PeriodicThread {
 public:
  PeriodicThread(double seconds, std::function<void()> fn) : thread_([this, seconds, fn = std::move(fn)] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return stop_; })) {
      lock.unlock();
      fn();
      lock.lock();
    }
  }) {}
  ~PeriodicThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  PeriodicThread(const PeriodicThread&) = delete;
  PeriodicThread& operator=(const PeriodicThread&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members it uses exist
};

}  // namespace tandem::serve

#include "engine/trace.h"

#include <chrono>
#include <map>
#include <mutex>

namespace tandem::trace {

namespace detail {
std::atomic<bool> on{false};
}

namespace {

std::mutex mu;
std::vector<Event> events;
std::map<int, std::string> names;
std::atomic<int> next_tid{0};

int this_tid() {
  thread_local const int tid = next_tid++;
  return tid;
}

}  // namespace

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void record(const char* name, int64_t begin_us, int64_t end_us, int64_t arg) {
  if (!enabled()) return;
  const int tid = this_tid();
  std::lock_guard<std::mutex> lock(mu);
  events.push_back({name, tid, begin_us, end_us, arg});
}

void name_thread(const char* name) {
  const int tid = this_tid();
  std::lock_guard<std::mutex> lock(mu);
  names[tid] = name;
}

void start() {
  std::lock_guard<std::mutex> lock(mu);
  events.clear();
  events.reserve(1 << 16);
  detail::on.store(true);
}

Recording stop() {
  detail::on.store(false);
  std::lock_guard<std::mutex> lock(mu);
  Recording r;
  r.events.swap(events);
  r.threads.assign(names.begin(), names.end());
  return r;
}

}  // namespace tandem::trace

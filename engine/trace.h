// A process-wide recorder of timed phases, for `tandem train --timeline` (a Chrome trace of every
// rank's steps). Off by default, where a Span costs one relaxed atomic load and nothing is kept.
// On, a Span reads the steady clock twice and appends one event under a mutex: a training step
// records about ten events (data, forward, backward, all-reduce wait, optimizer, ...) plus one per
// gradient bucket, far below a step's cost (benchmarks/RESULTS.md, "Timeline overhead").
// Names are string literals: events keep the pointer.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tandem::trace {

struct Event {
  const char* name;
  int tid;                  // the recording thread, numbered from 0 in order of first use
  int64_t begin_us, end_us;  // steady clock, microseconds
  int64_t arg;              // the training step, a bucket's index, ...; -1 if none
};

namespace detail {
extern std::atomic<bool> on;
}

inline bool enabled() { return detail::on.load(std::memory_order_relaxed); }
int64_t now_us();  // steady clock
// Appends one event on the calling thread when recording.
void record(const char* name, int64_t begin_us, int64_t end_us, int64_t arg = -1);
// The calling thread's name in the trace ("training", "allreduce", ...).
void name_thread(const char* name);

void start();  // drops earlier events and starts recording
struct Recording {
  std::vector<Event> events;
  std::vector<std::pair<int, std::string>> threads;  // tid -> name, for the named ones
};
Recording stop();  // stops recording and hands over what was recorded

// Times its own scope as one event.
class Span {
 public:
  explicit Span(const char* name, int64_t arg = -1)
      : name_(enabled() ? name : nullptr), arg_(arg), begin_(name_ ? now_us() : 0) {}
  ~Span() {
    if (name_) record(name_, begin_, now_us(), arg_);
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  const char* name_;
  int64_t arg_;
  int64_t begin_;
};

}  // namespace tandem::trace

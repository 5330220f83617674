// The stall watchdog's judgement, shared by the communicators that run one (MPI, Gloo): rank 0
// hears every rank's progress (collectives entered, training step) a few times a second, over
// whatever channel the communicator has, and decides when the job must end. A rank behind the
// furthest one, with no progress for longer than the timeout while others wait in a collective it has
// not entered, is a stall; a rank not heard from at all for longer than the timeout is unreachable
// (its host or the network to it is gone: a rank that is merely slow still sends heartbeats from its
// watchdog thread). docs/ARCHITECTURE.md §7.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

class StallJudge {
 public:
  // `hosts`: each rank's host name, for the reports.
  StallJudge(std::vector<std::string> hosts, double timeout_s, int64_t now_ns);
  // A heartbeat from `rank`: it has entered `seq` collectives and is at training `step`.
  void heard(int rank, uint64_t seq, uint64_t step, int64_t now_ns);
  // Rank 0's own progress and the time; returns the report that ends the job ("" while all is well).
  std::string verdict(uint64_t my_seq, uint64_t my_step, int64_t now_ns);
  // Each rank's last known step (for ranks_behind).
  const std::vector<unsigned long long>& steps() const { return step_; }

 private:
  std::string named(const std::vector<int>& ranks) const;

  std::vector<std::string> hosts_;
  double timeout_s_;
  int64_t timeout_ns_;
  std::vector<unsigned long long> seq_, step_, seen_;
  std::vector<int64_t> behind_since_, heard_at_;
};

// When a rank's watchdog sends its progress to rank 0: whenever it changes, and at least every
// min(1 s, timeout / 4) as a heartbeat, so that rank 0 hears a live rank several times within the
// timeout whatever it is doing.
class HeartbeatSchedule {
 public:
  explicit HeartbeatSchedule(double timeout_s);
  bool due(uint64_t seq, uint64_t step, int64_t now_ns) const {
    return seq != seq_ || step != step_ || now_ns - sent_at_ >= keepalive_ns_;
  }
  void sent(uint64_t seq, uint64_t step, int64_t now_ns) {
    seq_ = seq;
    step_ = step;
    sent_at_ = now_ns;
  }

 private:
  int64_t keepalive_ns_;
  uint64_t seq_ = 0, step_ = 0;
  int64_t sent_at_ = 0;
};

int64_t steady_now_ns();

// The ranks whose last known step (`steps`, as StallJudge::steps gives them) is before `step`,
// listed "1, 3" (Communicator::ranks_behind).
std::string ranks_before(const std::vector<unsigned long long>& steps, uint64_t step);

}  // namespace tandem

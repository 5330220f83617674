#include "dist/stall_judge.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

namespace tandem {

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

HeartbeatSchedule::HeartbeatSchedule(double timeout_s)
    : keepalive_ns_(std::min<int64_t>(1000000000, static_cast<int64_t>(timeout_s * 1e9) / 4)) {}

std::string ranks_before(const std::vector<unsigned long long>& steps, uint64_t step) {
  std::string out;
  for (size_t r = 0; r < steps.size(); ++r)
    if (steps[r] < step) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

StallJudge::StallJudge(std::vector<std::string> hosts, double timeout_s, int64_t now_ns)
    : hosts_(std::move(hosts)),
      timeout_s_(timeout_s),
      timeout_ns_(static_cast<int64_t>(timeout_s * 1e9)),
      seq_(hosts_.size(), 0),
      step_(hosts_.size(), 0),
      seen_(hosts_.size(), 0),
      behind_since_(hosts_.size(), 0),
      heard_at_(hosts_.size(), now_ns) {}

void StallJudge::heard(int rank, uint64_t seq, uint64_t step, int64_t now_ns) {
  if (rank <= 0 || rank >= static_cast<int>(hosts_.size())) return;
  seq_[rank] = seq;
  step_[rank] = step;
  heard_at_[rank] = now_ns;
}

std::string StallJudge::named(const std::vector<int>& ranks) const {
  std::string list;
  for (int r : ranks) list += (list.empty() ? "" : ", ") + std::to_string(r) + " (" + hosts_[r] + ")";
  return list;
}

std::string StallJudge::verdict(uint64_t my_seq, uint64_t my_step, int64_t now) {
  const int size = static_cast<int>(hosts_.size());
  char buf[4096];
  std::vector<int> silent, heard;
  for (int r = 1; r < size; ++r) (now - heard_at_[r] > timeout_ns_ ? silent : heard).push_back(r);
  if (!silent.empty()) {
    heard.insert(heard.begin(), 0);
    std::snprintf(buf, sizeof(buf),
                  "unreachable: rank(s) %s sent no heartbeat for %.0f s (--collective-timeout); rank(s) %s did; "
                  "aborting the job at collective #%llu\n  hint: the hosts or the network between them are down "
                  "(a link, a switch, a firewall); check that those hosts are up and reachable from %s",
                  named(silent).c_str(), timeout_s_, named(heard).c_str(), static_cast<unsigned long long>(my_seq),
                  hosts_[0].c_str());
    return buf;
  }
  seq_[0] = my_seq;
  step_[0] = my_step;
  int ahead = 0;
  for (int r = 1; r < size; ++r)
    if (seq_[r] > seq_[ahead]) ahead = r;
  std::string missing, waiting;
  for (int r = 0; r < size; ++r) {
    const bool behind = seq_[r] < seq_[ahead];
    if (seq_[r] != seen_[r] || !behind) behind_since_[r] = 0;
    seen_[r] = seq_[r];
    if (behind && behind_since_[r] == 0) behind_since_[r] = now;
    if (behind && now - behind_since_[r] > timeout_ns_)
      missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    else if (!behind)
      waiting += (waiting.empty() ? "" : ", ") + std::to_string(r);
  }
  if (missing.empty()) return "";
  std::snprintf(buf, sizeof(buf),
                "stall: rank(s) %s did not reach step %llu (collective #%llu) within %.0f s (--collective-timeout), "
                "while rank(s) %s waited there; aborting the job\n  hint: check those ranks' output; a rank may be "
                "stuck, overloaded or gone",
                missing.c_str(), step_[ahead], seq_[ahead], timeout_s_, waiting.c_str());
  return buf;
}

}  // namespace tandem

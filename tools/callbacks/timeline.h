// Timeline (--timeline FILE): a Chrome trace (chrome://tracing, Perfetto, the Trace Event Format's
// "X" events) of every rank's training steps, as Horovod's timeline shows them: one process per
// rank, one thread per recording thread ("training", "allreduce"), and per step the phases
//   step (args.step: the global step before it), data, forward, backward, local reduce (several
//   replicas in a process), allreduce wait, optimizer, state sync (BatchNormalization statistics
//   over replicas), callbacks, checkpoint snapshot, and on the all-reduce thread one
//   "allreduce bucket" per bucket (args.bucket) from its hand-off to its completion.
// Times are microseconds from the first recorded event of any rank, each rank's steady clock placed
// on its wall clock. Every rank records (engine/trace.h); at the end of training the ranks' events
// are gathered to rank 0, which writes FILE atomically. A run stopped by an error writes none.
// On GPUs the phases time the host's side (launches), as other frameworks' host timelines do.
#pragma once
#include <string>

#include "dist/communicator.h"
#include "engine/callback.h"

namespace tandem {

class Timeline : public Callback {
 public:
  Timeline(std::string path, Communicator* comm, bool chief);
  ~Timeline() override;
  void on_train_begin() override;  // checks FILE's directory (chief), starts recording
  void on_train_end() override;    // collective: gathers the ranks' events; the chief writes FILE

 private:
  std::string path_;
  Communicator* comm_;
  bool chief_;
  int64_t wall_minus_steady_us_ = 0;
};

}  // namespace tandem

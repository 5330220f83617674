// TerminateOnNaN, always on: a loss that is NaN or infinite stops training with a Numeric error
// naming the step. Every process sees the same agreed loss, so all of them stop at the same step,
// before any later callback of that step (a checkpoint) runs.
#pragma once
#include "engine/callback.h"

namespace tandem {

class TerminateOnNaN : public Callback {
 public:
  void on_batch_end(const BatchLog& log) override;
};

}  // namespace tandem

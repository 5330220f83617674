#include "tools/callbacks/terminate_on_nan.h"

#include <cmath>
#include <cstdio>

#include "engine/errors.h"
#include "engine/trainer.h"

namespace tandem {

void TerminateOnNaN::on_batch_end(const BatchLog& log) {
  if (std::isfinite(log.loss)) return;
  char loss[32];
  std::snprintf(loss, sizeof(loss), "%g", std::isnan(log.loss) ? std::fabs(log.loss) : log.loss);  // not "-nan"
  throw_error(ErrorKind::Numeric,
              std::string("the loss became ") + loss + " at epoch " + std::to_string(log.epoch) + ", step " +
                  std::to_string(log.step) + "/" + std::to_string(log.steps) + ": training stopped, nothing saved",
              "training diverged; try a lower --lr; committed checkpoints are as they were");
}

}  // namespace tandem

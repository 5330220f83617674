#include "engine/inference.h"

#include <algorithm>

#include "engine/errors.h"

namespace tandem {

void evaluation_sums(Replica& rep, const Dataset& data, bool one_hot, int world, int rank, double sums[2]) {
  if (data.sample_shape != rep.model().input_shape())
    throw_invalid("the data's samples have shape " + data.sample_shape.str() + " but the model expects " +
                  rep.model().input_shape().str());
  Backend& be = rep.backend();
  ResidentDataset rd(be, data);
  const int64_t B = rep.max_batch();
  std::vector<int32_t> index(static_cast<size_t>(B));
  rep.reset_metrics();
  int64_t batch_no = 0;
  for (int64_t begin = 0; begin < data.count; begin += B, ++batch_no) {
    if (batch_no % world != rank) continue;
    const int64_t rows = std::min(B, data.count - begin);
    for (int64_t i = 0; i < rows; ++i) index[i] = static_cast<int32_t>(begin + i);
    rep.load_batch(rd.data, index.data(), rows, one_hot);
    StepContext ctx;
    ctx.backend = &be;
    ctx.batch = rows;
    rep.forward(ctx);
    rep.loss(rows, 1.f, one_hot, false);
  }
  rep.read_metrics(&sums[0], &sums[1]);
}

EvalResult eval_result(const double sums[2], int64_t count) {
  EvalResult r;
  r.samples = count;
  r.loss = count ? sums[0] / double(count) : 0;
  r.accuracy = count ? sums[1] / double(count) : 0;
  return r;
}

std::vector<float> predicted_probabilities(Replica& rep, const Dataset& data, int64_t count) {
  count = std::min(count, data.count);
  Backend& be = rep.backend();
  const int classes = rep.model().num_classes();
  std::vector<float> out(static_cast<size_t>(count) * classes);
  Dataset part = data.slice(0, count);
  ResidentDataset rd(be, part);
  const int64_t B = rep.max_batch();
  std::vector<int32_t> index(static_cast<size_t>(B));
  for (int64_t begin = 0; begin < count; begin += B) {
    const int64_t rows = std::min(B, count - begin);
    for (int64_t i = 0; i < rows; ++i) index[i] = static_cast<int32_t>(begin + i);
    rep.load_batch(rd.data, index.data(), rows, false);
    StepContext ctx;
    ctx.backend = &be;
    ctx.batch = rows;
    ctx.want_probs = true;
    const float* probs = rep.forward(ctx);
    be.download(out.data() + begin * classes, probs, sizeof(float) * rows * classes);
  }
  return out;
}

Inference::Inference(const Model& model, Backend& backend, const std::vector<float>& weights, int64_t batch)
    : replica_(model, backend, batch) {
  replica_.set_weights(weights);
}

EvalResult Inference::evaluate(const Dataset& data, bool one_hot) {
  double sums[2];
  evaluation_sums(replica_, data, one_hot, 1, 0, sums);
  return eval_result(sums, data.count);
}

std::vector<float> Inference::predict(const Dataset& data, int64_t count) {
  return predicted_probabilities(replica_, data, count);
}

}  // namespace tandem

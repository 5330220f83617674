// Forward passes without training: evaluation and prediction on one replica. `tandem evaluate`,
// `tandem predict` and the trainer's validation run these; `Inference` holds a saved model's
// weights on a backend with no optimizer (the server has its own batched path, serve/servable.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/dataset.h"
#include "engine/model.h"
#include "engine/replica.h"

namespace tandem {

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

// A dataset made resident in one backend's memory: aliased on the CPU, uploaded once elsewhere.
class ResidentDataset {
 public:
  ResidentDataset(Backend& b, const Dataset& d) : backend(b) {
    data.images = d.images.data();
    data.labels = d.labels.data();
    data.count = d.count;
    data.sample_elems = d.sample_elems();
    data.num_classes = d.num_classes;
    if (b.device().kind == DeviceKind::Cpu) return;
    images = b.allocate(d.images.size());
    labels = b.allocate(d.labels.size());
    b.upload(images, d.images.data(), d.images.size());
    b.upload(labels, d.labels.data(), d.labels.size());
    data.images = static_cast<const uint8_t*>(images);
    data.labels = static_cast<const uint8_t*>(labels);
  }
  ~ResidentDataset() {
    if (images) backend.deallocate(images);
    if (labels) backend.deallocate(labels);
  }
  ResidentDataset(const ResidentDataset&) = delete;
  ResidentDataset& operator=(const ResidentDataset&) = delete;
  Backend& backend;
  ResidentData data;
  void* images = nullptr;
  void* labels = nullptr;
};

// The loss and correct-prediction sums of `rep` over the batches of `data` this process takes
// (batch i when i % world == rank), into sums[0] and sums[1]. Throws InvalidArgument when the
// data's samples are not the model's input shape.
void evaluation_sums(Replica& rep, const Dataset& data, bool one_hot, int world, int rank, double sums[2]);
// Mean loss and accuracy from the sums over all `count` samples.
EvalResult eval_result(const double sums[2], int64_t count);
// Class probabilities of the first `count` samples of `data` (row-major [count, classes]).
std::vector<float> predicted_probabilities(Replica& rep, const Dataset& data, int64_t count);

// A model's weights on one backend, for evaluation and prediction.
class Inference {
 public:
  Inference(const Model& model, Backend& backend, const std::vector<float>& weights, int64_t batch = 256);
  EvalResult evaluate(const Dataset& data, bool one_hot = false);
  std::vector<float> predict(const Dataset& data, int64_t count);

 private:
  Replica replica_;
};

}  // namespace tandem

// In-memory labelled image datasets (uint8, as stored), the Fashion-MNIST loader, the validation
// split and the per-epoch shuffle.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace tandem {

struct Dataset {
  std::vector<uint8_t> images;  // count * sample_elems(), NHWC
  std::vector<uint8_t> labels;  // count
  Shape sample_shape;           // e.g. (28, 28, 1)
  int64_t count = 0;
  int num_classes = 10;
  int64_t sample_elems() const { return sample_shape.numel(); }
  Dataset slice(int64_t begin, int64_t end) const;  // samples [begin, end)
};

struct LabelledData {
  Dataset train, test;
  std::vector<std::string> class_names;
  std::vector<std::string> files;  // the files read: train images, train labels, test images, test labels
};

const std::vector<std::string>& fashion_mnist_class_names();

// --data DIR if given, else $TANDEM_DATA, else /usr/share/datasets/fashion-mnist.
std::string resolve_data_dir(const std::string& flag_value);

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`. Checks image/label counts
// match and labels are in [0, 10). Errors name the file and say how to get the data.
LabelledData load_fashion_mnist(const std::string& dir);

// The first `validation_size` samples become the validation set (as X_train_full[:5000]).
// Returns {train, validation}.
// Throws InvalidArgument if validation_size < 0 or leaves no training samples.
std::pair<Dataset, Dataset> split_validation(const Dataset& full, int64_t validation_size);

// The order in which epoch `epoch` visits `count` samples: a Fisher-Yates shuffle driven by
// (seed, epoch) alone, so it is the same on every rank and for every replica count.
std::vector<int32_t> epoch_permutation(int64_t count, uint64_t seed, uint64_t epoch);

}  // namespace tandem

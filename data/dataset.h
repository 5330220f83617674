// The Fashion-MNIST loader and the validation split, into engine/dataset.h's in-memory Dataset.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/dataset.h"

namespace tandem {

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

}  // namespace tandem

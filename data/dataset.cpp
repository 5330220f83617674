#include "data/dataset.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "data/idx.h"
#include "engine/errors.h"

namespace tandem {
namespace {

const char* kInstallHint = "install the Debian package dataset-fashion-mnist, or pass --data DIR / set TANDEM_DATA";
constexpr int kFashionClasses = 10;

// `dir`/`name`.gz if it exists, else `dir`/`name`; throws Io naming both candidates otherwise.
std::string find_file(const std::filesystem::path& dir, const std::string& name) {
  std::error_code ec;
  const std::filesystem::path gz = dir / (name + ".gz");
  const std::filesystem::path plain = dir / name;
  if (std::filesystem::is_regular_file(gz, ec)) return gz.string();
  if (std::filesystem::is_regular_file(plain, ec)) return plain.string();
  throw_io("missing Fashion-MNIST file " + gz.string() + " (or " + plain.string() + ")", kInstallHint);
}

// Appends the two paths it reads to `files`.
Dataset load_split(const std::filesystem::path& dir, const std::string& prefix, std::vector<std::string>& files) {
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  files.push_back(images_path);
  files.push_back(labels_path);
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);

  const uint32_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  if (h == 0 || w == 0)
    throw_data("image file " + images_path + " has images of size " + std::to_string(h) + "x" + std::to_string(w) +
                   " (dimensions at byte offset 8 of the IDX data); height and width must be positive",
               kInstallHint);
  if (labels.dims[0] != n)
    throw_data("image/label count mismatch: " + images_path + " holds " + std::to_string(n) + " images but " +
                   labels_path + " holds " + std::to_string(labels.dims[0]) + " labels",
               "the two files must come from the same data set split; " + std::string(kInstallHint));
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= kFashionClasses)
      throw_data(
          "label file " + labels_path + ": label " + std::to_string(i) + " has value " +
              std::to_string(labels.data[i]) + " (at byte offset " + std::to_string(8 + i) +
              " of the IDX data), outside [0, " + std::to_string(kFashionClasses) + ")",
          "Fashion-MNIST labels are class indices 0 to 9; the file is damaged or not a Fashion-MNIST label file");
  }

  Dataset d;
  d.images = std::move(images.data);
  d.labels = std::move(labels.data);
  d.sample_shape = Shape{static_cast<int64_t>(h), static_cast<int64_t>(w), 1};
  d.count = n;
  d.num_classes = kFashionClasses;
  return d;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::string resolve_data_dir(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  const char* env = std::getenv("TANDEM_DATA");
  if (env && *env) return env;
  return "/usr/share/datasets/fashion-mnist";
}

LabelledData load_fashion_mnist(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path root(dir);
  if (!std::filesystem::exists(root, ec)) throw_io("Fashion-MNIST directory " + dir + " does not exist", kInstallHint);
  if (!std::filesystem::is_directory(root, ec))
    throw_io("Fashion-MNIST path " + dir + " is not a directory", kInstallHint);

  LabelledData out;
  out.train = load_split(root, "train", out.files);
  out.test = load_split(root, "t10k", out.files);
  if (out.train.sample_shape != out.test.sample_shape)
    throw_data("Fashion-MNIST in " + dir + ": training images are " + out.train.sample_shape.str() +
                   " but test images are " + out.test.sample_shape.str(),
               "the training and test files must come from the same data set; " + std::string(kInstallHint));
  out.class_names = fashion_mnist_class_names();
  return out;
}

std::pair<Dataset, Dataset> split_validation(const Dataset& full, int64_t validation_size) {
  if (validation_size < 0 || validation_size >= full.count)
    throw_invalid("validation size " + std::to_string(validation_size) + " is out of range for " +
                      std::to_string(full.count) + " training samples",
                  "pass --validation-size N with 0 <= N < " + std::to_string(full.count) +
                      " so that at least one training sample remains");
  return {full.slice(validation_size, full.count), full.slice(0, validation_size)};
}

}  // namespace tandem

// tandem export: write a saved model version as BASE/NAME/<version>/ for serving —
// a SavedModel for TensorFlow Serving, an ONNX model, a TensorFlow Lite or TF.js model, or a native copy
// (export/exporter.h).
#include <cstdio>
#include <limits>
#include <string>

#include "data/dataset.h"
#include "engine/errors.h"
#include "export/exporter.h"
#include "storage/loaded_model.h"
#include "tools/cli.h"

namespace tandem::cli {

namespace {
struct ExportArgs {
  std::string src, to, format, version, quantize = "none", data;
  int64_t calibration_samples = tfl::kDefaultCalibrationSamples;
  bool overwrite = false, int8_io = false;
};

// --version: a positive decimal integer that fits int64 (CLI11 would saturate an overflow).
int64_t parse_version(const std::string& text) {
  const std::string hint = "omit --version to write the next free version";
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
    throw_invalid("--version must be a positive integer, got '" + text + "'", hint);
  const unsigned long long v = std::stoull(text);  // <= 19 digits: no overflow of unsigned long long
  if (v == 0 || v > static_cast<unsigned long long>(std::numeric_limits<int64_t>::max()))
    throw_invalid("--version must be a positive integer up to " + std::to_string(std::numeric_limits<int64_t>::max()) +
                      ", got " + text,
                  hint);
  return static_cast<int64_t>(v);
}

// The first `count` training images of the data set, as the model takes them (x / 255, NHWC), for
// int8 calibration. Checks the images' shape against the model's input.
std::vector<float> calibration_images(const std::string& version_dir, const std::string& data_flag, int64_t count) {
  const std::string hint = "pass --calibration-samples N with " + std::to_string(tfl::kMinCalibrationSamples) +
                           " <= N <= the number of training images";
  if (count < tfl::kMinCalibrationSamples)
    throw_invalid("--calibration-samples must be at least " + std::to_string(tfl::kMinCalibrationSamples) +
                      " for int8 calibration, got " + std::to_string(count),
                  hint);
  const Shape input = load_model(version_dir).model.input_shape();
  const std::string dir = resolve_data_dir(data_flag);
  const Dataset train = load_fashion_mnist(dir).train;
  if (!(train.sample_shape == input))
    throw_invalid("the calibration images in " + dir + " are " + train.sample_shape.str() + " but the model takes " +
                      input.str(),
                  "pass --data with images of the model's input shape");
  if (count > train.count)
    throw_invalid("--calibration-samples " + std::to_string(count) + " is more than the " +
                      std::to_string(train.count) + " training images in " + dir,
                  hint);
  const size_t n = static_cast<size_t>(count * train.sample_elems());
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(train.images[i]) / 255.f;  // as the trainer feeds them
  return x;
}
}  // namespace

Command add_export(CLI::App& root) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* c = root.add_subcommand(
      "export", "Export a saved model version for serving: SavedModel (TensorFlow Serving), ONNX, TFLite, TF.js or native");
  c->add_option("MODEL_VERSION_DIR", a->src, "the model version to export, e.g. out/model/1")->required();
  c->add_option("--to", a->to, "the served model's directory BASE/NAME; writes BASE/NAME/<version>/")->required();
  CLI::Option* version =
      c->add_option("--version", a->version, "the version number N to write (default: the next free one)");
  c->add_option("--format", a->format,
                "savedmodel, onnx, tflite, tfjs or native, several separated by commas, or all (the native files are "
                "always written)")
      ->required();
  c->add_flag("--overwrite", a->overwrite, "replace the version if it exists (the whole directory)");
  c->add_option("--quantize", a->quantize,
                "TensorFlow Lite post-training quantization: none (default), float16 (weights as float16), dynamic "
                "(int8 weights, float activations) or int8 (int8 weights and activations, calibrated)");
  CLI::Option* samples = c->add_option("--calibration-samples", a->calibration_samples,
                                       "int8: how many training images calibrate the activation ranges (default 500)");
  CLI::Option* data = c->add_option("--data", a->data,
                                    "int8: the Fashion-MNIST directory the calibration images come from (default: "
                                    "$TANDEM_DATA or /usr/share/datasets/fashion-mnist)");
  CLI::Option* int8_io = c->add_flag("--int8-io", a->int8_io, "int8: integer input and output tensors (no float edges)");
  return Command{c, [a, version, samples, data, int8_io]() -> int {
                   const int64_t v = version->count() > 0 ? parse_version(a->version) : 0;
                   const std::vector<std::string> formats = parse_export_formats(a->format);
                   tfl::QuantizeOptions q;
                   q.mode = tfl::parse_quantize_mode(a->quantize);
                   q.int8_io = a->int8_io;
                   if (q.mode != tfl::QuantizeMode::Int8)
                     for (const CLI::Option* o : {samples, data, int8_io})
                       if (o->count() > 0)
                         throw_invalid(o->get_name() + " applies to --quantize int8 only",
                                       "add --quantize int8, or drop " + o->get_name());
                   if (q.mode == tfl::QuantizeMode::Int8)
                     q.calibration = calibration_images(a->src, a->data, a->calibration_samples);
                   const std::string dir = export_model(a->src, a->to, v, a->format, a->overwrite, q);
                   std::string names;
                   for (const auto& f : formats) names += (names.empty() ? "" : ", ") + f;
                   if (q.mode != tfl::QuantizeMode::None)
                     names += std::string(" quantized ") + tfl::quantize_mode_name(q.mode);
                   std::printf("exported %s (%s) to %s\n", a->src.c_str(), names.c_str(), dir.c_str());
                   return 0;
                 }};
}

}  // namespace tandem::cli

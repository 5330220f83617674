// tandem export: write a saved model version as BASE/NAME/<version>/ for serving —
// a SavedModel for TensorFlow Serving, an ONNX model, a TensorFlow Lite or TF.js model, or a native copy
// (export/exporter.h).
#include <cstdio>
#include <limits>
#include <string>

#include "engine/errors.h"
#include "export/exporter.h"
#include "tools/cli.h"

namespace tandem::cli {

namespace {
struct ExportArgs {
  std::string src, to, format, version;
  bool overwrite = false;
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
  return Command{c, [a, version]() -> int {
                   const int64_t v = version->count() > 0 ? parse_version(a->version) : 0;
                   const std::vector<std::string> formats = parse_export_formats(a->format);
                   const std::string dir = export_model(a->src, a->to, v, a->format, a->overwrite);
                   std::string names;
                   for (const auto& f : formats) names += (names.empty() ? "" : ", ") + f;
                   std::printf("exported %s (%s) to %s\n", a->src.c_str(), names.c_str(), dir.c_str());
                   return 0;
                 }};
}

}  // namespace tandem::cli

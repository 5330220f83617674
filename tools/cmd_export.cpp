// tandem export: write a saved model version as BASE/NAME/<version>/ for serving —
// a SavedModel for TensorFlow Serving, an ONNX model, or a native copy (export/exporter.h).
#include <cstdio>

#include "engine/errors.h"
#include "export/exporter.h"
#include "tools/cli.h"

namespace tandem::cli {

namespace {
struct ExportArgs {
  std::string src, to, format;
  int64_t version = 0;
  bool overwrite = false;
};
}  // namespace

Command add_export(CLI::App& root) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* c = root.add_subcommand(
      "export", "Export a saved model version for serving: SavedModel (TensorFlow Serving), ONNX or native");
  c->add_option("MODEL_VERSION_DIR", a->src, "the model version to export, e.g. out/model/1")->required();
  c->add_option("--to", a->to, "the served model's directory BASE/NAME; writes BASE/NAME/<version>/")->required();
  CLI::Option* version =
      c->add_option("--version", a->version, "the version number to write (default: the next free one)");
  c->add_option("--format", a->format,
                "savedmodel, onnx or native, or several separated by commas (the native files are always written)")
      ->required();
  c->add_flag("--overwrite", a->overwrite, "replace the version if it exists (the whole directory)");
  return Command{c, [a, version]() -> int {
                   if (version->count() > 0 && a->version <= 0)
                     throw_invalid("--version must be a positive integer, got " + std::to_string(a->version),
                                   "omit --version to write the next free version");
                   const std::vector<std::string> formats = parse_export_formats(a->format);
                   const std::string dir = export_model(a->src, a->to, a->version, a->format, a->overwrite);
                   std::string names;
                   for (const auto& f : formats) names += (names.empty() ? "" : ", ") + f;
                   std::printf("exported %s (%s) to %s\n", a->src.c_str(), names.c_str(), dir.c_str());
                   return 0;
                 }};
}

}  // namespace tandem::cli

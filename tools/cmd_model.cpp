// tandem evaluate / predict / summary: work on a saved model version (or, for summary, a spec).
#include <cstdio>

#include "engine/errors.h"
#include "engine/inference.h"
#include "kernels/backends.h"
#include "tools/cli.h"

namespace tandem::cli {

using nlohmann::json;

namespace {

struct ModelArgs {
  std::string dir, data, device = "cpu";
  int threads = 0;
  int64_t count = 10;
  bool json_out = false;
};

void add_common(CLI::App* c, ModelArgs& a) {
  c->add_option("MODEL_VERSION_DIR", a.dir, "a model version directory, e.g. out/model/1")->required();
  c->add_option("--data", a.data, "directory with the Fashion-MNIST IDX files");
  c->add_option("--device", a.device, "cpu or gpu:N")->capture_default_str();
  c->add_option("--threads", a.threads, "CPU threads (default: all cores)");
}

// A loaded model's weights on `backend`, for evaluation and prediction.
std::unique_ptr<Inference> inference_on(const LoadedModel& m, Backend& backend) {
  backend.set_inference_only(true);  // the kernels tandem serve runs, so their answers agree
  return std::make_unique<Inference>(m.model, backend, m.arena);
}

std::vector<std::string> class_names_of(const LoadedModel& m) {
  std::vector<std::string> names;
  if (m.version.model_json.contains("class_names") && m.version.model_json["class_names"].is_array())
    for (const auto& n : m.version.model_json["class_names"]) names.push_back(n.is_string() ? n.get<std::string>() : "?");
  names.resize(static_cast<size_t>(m.model.num_classes()), "?");
  return names;
}

}  // namespace

Command add_evaluate(CLI::App& root) {
  auto a = std::make_shared<ModelArgs>();
  CLI::App* c = root.add_subcommand("evaluate", "Evaluate a saved model version on the Fashion-MNIST test set");
  add_common(c, *a);
  c->add_flag("--json", a->json_out, "print the result as JSON");
  return Command{c, [a]() -> int {
                   LoadedModel m = load_model(a->dir);
                   auto backend = make_backend(Device::parse(a->device), a->threads ? a->threads : default_threads());
                   LabelledData data = load_fashion_mnist(resolve_data_dir(a->data));
                   EvalResult r = inference_on(m, *backend)->evaluate(data.test);
                   if (a->json_out)
                     std::printf("%s\n", json{{"test_loss", r.loss}, {"test_accuracy", r.accuracy}, {"samples", r.samples}}
                                             .dump(2)
                                             .c_str());
                   else
                     std::printf("test_loss: %.4f - test_accuracy: %.4f (%lld samples)\n", r.loss, r.accuracy,
                                 static_cast<long long>(r.samples));
                   return 0;
                 }};
}

Command add_predict(CLI::App& root) {
  auto a = std::make_shared<ModelArgs>();
  CLI::App* c = root.add_subcommand("predict", "Predict classes of Fashion-MNIST test images with a saved model");
  add_common(c, *a);
  c->add_option("--count", a->count, "number of test images, from the first")->capture_default_str();
  c->add_flag("--json", a->json_out, "print every probability as JSON");
  return Command{c, [a]() -> int {
                   if (a->count <= 0) throw_invalid("--count must be positive, got " + std::to_string(a->count));
                   LoadedModel m = load_model(a->dir);
                   auto backend = make_backend(Device::parse(a->device), a->threads ? a->threads : default_threads());
                   LabelledData data = load_fashion_mnist(resolve_data_dir(a->data));
                   const int64_t n = std::min(a->count, data.test.count);
                   std::vector<float> probs = inference_on(m, *backend)->predict(data.test, n);
                   const int k = m.model.num_classes();
                   const auto names = class_names_of(m);
                   json out = json::array();
                   for (int64_t i = 0; i < n; ++i) {
                     const float* p = probs.data() + i * k;
                     int best = static_cast<int>(std::max_element(p, p + k) - p);
                     if (a->json_out) {
                       out.push_back({{"index", i},
                                      {"class", best},
                                      {"label", data.test.labels[i]},
                                      {"probabilities", std::vector<float>(p, p + k)}});
                     } else {
                       std::printf("%6lld  predicted %d (%s) p=%.4f  label %d (%s)\n", static_cast<long long>(i), best,
                                   names[best].c_str(), p[best], data.test.labels[i],
                                   names[data.test.labels[i] < k ? data.test.labels[i] : 0].c_str());
                     }
                   }
                   if (a->json_out) std::printf("%s\n", out.dump().c_str());
                   return 0;
                 }};
}

Command add_summary(CLI::App& root) {
  auto model = std::make_shared<std::string>("mlp");
  CLI::App* c = root.add_subcommand("summary", "Print a model's layers, output shapes and parameter counts");
  c->add_option("--model", *model, "mlp, cnn, a spec FILE.json, or a model version directory")
      ->capture_default_str();
  return Command{c, [model]() -> int {
                   namespace fs = std::filesystem;
                   if (fs::is_directory(*model)) {
                     std::printf("%s", load_model(*model).model.summary().c_str());
                   } else {
                     std::printf("%s", Model::from_name_or_file(*model).summary().c_str());
                   }
                   return 0;
                 }};
}

}  // namespace tandem::cli

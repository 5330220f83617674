// tandem train: fit a model on Fashion-MNIST, evaluate on the test set, save the results.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>

#include "engine/errors.h"
#include "engine/progress.h"
#include "engine/trainer.h"
#include "export/atomic_file.h"
#include "tools/cli.h"

namespace tandem::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct TrainArgs {
  std::string model = "mlp";
  std::string data;
  int epochs = 10;
  int64_t batch_size = 32;
  std::string optimizer = "sgd";
  double lr = -1;  // optimizer's default
  double momentum = -1;
  bool nesterov = false;
  std::string schedule = "none";
  double decay_rate = 0.5;
  int64_t decay_steps = 0;
  uint64_t seed = 42;
  int threads = 0;
  int64_t validation_size = 5000;
  bool one_hot = false;
  std::string output;
  std::string device = "cpu";
};

std::string iso_time_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

OptimizerConfig optimizer_config(const TrainArgs& a, int64_t steps_per_epoch) {
  OptimizerConfig o;
  o.name = a.optimizer;
  if (o.name == "sgd") {
    // Defaults chosen by measurement (benchmarks/RESULTS.md): SGD with Nesterov momentum 0.9.
    o.lr = a.lr > 0 ? a.lr : 0.01;
    o.momentum = a.momentum >= 0 ? a.momentum : 0.9;
    o.nesterov = a.momentum >= 0 ? a.nesterov : true;
  } else {
    o.lr = a.lr > 0 ? a.lr : 0.001;
    if (a.momentum >= 0) throw_invalid("--momentum applies to --optimizer sgd only");
  }
  if (a.lr == 0 || (a.lr < 0 && a.lr != -1)) throw_invalid("--lr must be positive", "e.g. --lr 0.01");
  o.schedule.type = a.schedule;
  o.schedule.decay_rate = a.decay_rate;
  o.schedule.decay_steps = a.decay_steps > 0 ? a.decay_steps : steps_per_epoch;
  o.validate();
  return o;
}

}  // namespace

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

json model_json(const Model& model, const std::vector<std::string>& class_names, const json& metadata) {
  json weights = json::array();
  for (const auto& p : model.params()) weights.push_back({{"name", p.name}, {"shape", p.shape.dims}});
  return json{{"format", "tandem-model"},       {"format_version", 1},   {"name", model.name()},
              {"input_shape", model.input_shape().dims}, {"class_names", class_names}, {"spec", model.spec()},
              {"weights", weights},                 {"metadata", metadata}};
}

Command add_train(CLI::App& root) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* c = root.add_subcommand("train", "Train a model on Fashion-MNIST (defaults: the mlp preset)");
  c->add_option("--model", args->model, "mlp, cnn, or a model spec FILE.json")->capture_default_str();
  c->add_option("--data", args->data, "directory with the Fashion-MNIST IDX files (default: $TANDEM_DATA or "
                                      "/usr/share/datasets/fashion-mnist)");
  c->add_option("--epochs", args->epochs, "number of epochs")->capture_default_str();
  c->add_option("--batch-size", args->batch_size, "global batch size")->capture_default_str();
  c->add_option("--optimizer", args->optimizer, "sgd or adam")->capture_default_str();
  c->add_option("--lr", args->lr, "learning rate (default: 0.01 for sgd, 0.001 for adam)");
  c->add_option("--momentum", args->momentum, "SGD momentum (default 0.9, with Nesterov)");
  c->add_flag("--nesterov", args->nesterov, "Nesterov momentum (with an explicit --momentum)");
  c->add_option("--lr-schedule", args->schedule, "none, exponential or step")->capture_default_str();
  c->add_option("--lr-decay-rate", args->decay_rate, "multiply the rate by this every decay period")
      ->capture_default_str();
  c->add_option("--lr-decay-steps", args->decay_steps, "decay period in steps (default: one epoch)");
  c->add_option("--seed", args->seed, "seed for weights, shuffling and dropout")->capture_default_str();
  c->add_option("--threads", args->threads, "CPU threads (default: all cores)");
  c->add_option("--validation-size", args->validation_size, "first N training images held out for validation")
      ->capture_default_str();
  c->add_flag("--one-hot", args->one_hot, "one-hot labels with categorical cross-entropy");
  c->add_option("--output", args->output, "write DIR/model/<version>/, DIR/history.json and DIR/metrics.json");
  c->add_option("--device", args->device, "cpu or gpu:N")->capture_default_str();

  Command cmd;
  cmd.app = c;
  cmd.run = [args]() -> int {
    const TrainArgs& a = *args;
    if (a.threads < 0 || a.threads > 1024) throw_invalid("--threads must be between 1 and 1024");
    if (a.epochs < 0) throw_invalid("--epochs must be at least 0, got " + std::to_string(a.epochs));
    if (a.batch_size <= 0)
      throw_invalid("--batch-size must be positive, got " + std::to_string(a.batch_size), "e.g. --batch-size 32");
    Model model = Model::from_name_or_file(a.model);
    Device device = Device::parse(a.device);
    std::unique_ptr<Backend> backend = make_backend(device, a.threads ? a.threads : default_threads());

    // Refuse an unusable output directory before spending time on training.
    if (!a.output.empty()) {
      std::error_code ec;
      fs::create_directories(a.output, ec);
      if (ec || !fs::is_directory(a.output))
        throw_io("cannot create output directory '" + a.output + "'", "choose a writable --output DIR");
    }

    LabelledData data = load_fashion_mnist(resolve_data_dir(a.data));
    auto [train, validation] = split_validation(data.train, a.validation_size);
    const int64_t steps_per_epoch = (train.count + a.batch_size - 1) / a.batch_size;
    OptimizerConfig opt = optimizer_config(a, steps_per_epoch);
    TrainOptions options;
    options.epochs = a.epochs;
    options.batch_size = a.batch_size;
    options.seed = a.seed;
    options.one_hot = a.one_hot;

    Trainer trainer(model, {backend.get()}, options, opt);
    KerasProgress progress(stdout, ::isatty(STDOUT_FILENO) == 1);
    std::vector<EpochLog> logs = trainer.fit(train, validation.count ? &validation : nullptr, progress.callbacks());
    EvalResult test = trainer.evaluate(data.test);
    std::printf("test_loss: %.4f - test_accuracy: %.4f\n", test.loss, test.accuracy);

    double train_seconds = 0;
    int64_t train_samples = 0;
    for (const auto& l : logs) {
      train_seconds += l.seconds;
      train_samples += l.samples;
    }
    const double samples_per_second = train_seconds > 0 ? double(train_samples) / train_seconds : 0;
    if (a.output.empty()) return 0;

    json metadata{{"tandem_version", TANDEM_VERSION},
                  {"created", iso_time_now()},
                  {"epochs", a.epochs},
                  {"batch_size", a.batch_size},
                  {"optimizer", {{"name", opt.name}, {"lr", opt.lr}, {"momentum", opt.momentum}, {"nesterov", opt.nesterov}}},
                  {"seed", a.seed},
                  {"one_hot", a.one_hot},
                  {"test_loss", test.loss},
                  {"test_accuracy", test.accuracy}};
    ModelVersion version;
    version.model_json = model_json(model, data.class_names, metadata);
    version.tensors = model.to_tensors(trainer.weights());
    const std::string model_dir = (fs::path(a.output) / "model").string();
    const int64_t v = next_version(model_dir);
    const std::string version_dir = (fs::path(model_dir) / std::to_string(v)).string();
    write_model_version(version_dir, version);

    json history{{"loss", json::array()}, {"accuracy", json::array()}};
    for (const auto& l : logs) {
      history["loss"].push_back(l.loss);
      history["accuracy"].push_back(l.accuracy);
      if (l.has_val) {
        history["val_loss"].push_back(l.val_loss);
        history["val_accuracy"].push_back(l.val_accuracy);
      }
      history["epoch_seconds"].push_back(l.seconds);
      history["learning_rate"].push_back(l.learning_rate);
    }
    write_file_atomic((fs::path(a.output) / "history.json").string(), history.dump(2) + "\n");
    json metrics{{"test_loss", test.loss},
                 {"test_accuracy", test.accuracy},
                 {"epochs", a.epochs},
                 {"samples_per_second", samples_per_second},
                 {"train_seconds", train_seconds},
                 {"batch_size", a.batch_size},
                 {"model", model.name()},
                 {"model_version_dir", version_dir}};
    write_file_atomic((fs::path(a.output) / "metrics.json").string(), metrics.dump(2) + "\n");
    std::printf("saved model version %s\n", version_dir.c_str());
    return 0;
  };
  return cmd;
}

}  // namespace tandem::cli

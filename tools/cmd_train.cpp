// tandem train: fit a model on Fashion-MNIST, evaluate on the test set, save the results.
//   flags (tools/train_args.cpp) -> one strategy (dist/strategy.cpp) -> one callback list
//   (tools/train_run.cpp, tools/callbacks/) -> Trainer::fit -> evaluate -> save_run
#include <cstdio>

#include "dist/strategy.h"
#include "engine/checksum.h"
#include "engine/errors.h"
#include "engine/trainer.h"
#include "tools/cli.h"
#include "tools/train_args.h"
#include "tools/train_run.h"

namespace tandem::cli {
namespace {

// The data set's files as this rank decoded them: the ranks of a multi-worker job compare them at
// start-up, since on a cluster each host reads its own copy.
std::vector<InputDigest> input_digests(const LabelledData& data) {
  const std::vector<uint8_t>* contents[] = {&data.train.images, &data.train.labels, &data.test.images,
                                            &data.test.labels};
  TANDEM_ASSERT(data.files.size() == std::size(contents));
  std::vector<InputDigest> digests;
  for (size_t i = 0; i < data.files.size(); ++i)
    digests.push_back({data.files[i], crc32c(contents[i]->data(), contents[i]->size())});
  return digests;
}

}  // namespace

int default_threads() { return hardware_threads(); }

Command add_train(CLI::App& root) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* c = root.add_subcommand("train", "Train a model on Fashion-MNIST (defaults: the mlp preset)");
  add_train_flags(*c, *args);

  Command cmd;
  cmd.app = c;
  cmd.run = [args]() -> int {
    TrainArgs& a = *args;
    check(a);
    Model model = Model::from_name_or_file(a.model);
    std::unique_ptr<Strategy> strategy = make_strategy(a.strategy);
    const bool chief = strategy->is_chief();
    if (!a.output.empty() && chief) prepare_output_dir(a.output);

    LabelledData data = load_fashion_mnist(resolve_data_dir(a.data));
    auto [train, validation] = split_validation(data.train, a.validation_size);
    if (a.train_samples > 0 && a.train_samples < train.count) train = train.slice(0, a.train_samples);
    const OptimizerConfig opt = optimizer_config(a, (train.count + a.batch_size - 1) / a.batch_size);
    const nlohmann::json identity = run_identity(a, model, opt, strategy->gpu(), train.count, validation.count);
    nlohmann::json config = identity;  // what the ranks of a job must agree on
    config["epochs"] = a.epochs;
    strategy->connect(model, config, strategy->communicator() ? input_digests(data) : std::vector<InputDigest>{});

    TrainOptions options = train_options(a);
    options.central_storage = strategy->host_backend();  // null unless --strategy central-storage
    Trainer trainer(model, strategy->backends(), options, opt, strategy->sync());
    if (strategy->local_reduce()) trainer.set_local_reduce(strategy->local_reduce());
    if (a.strategy.batch_invariant > 0 && chief)
      std::printf("batch-invariant: %d leaves of %lld samples, gradients summed in one fixed tree\n",
                  a.strategy.batch_invariant, static_cast<long long>(a.batch_size / a.strategy.batch_invariant));

    TrainCallbacks callbacks = make_callbacks(a, model, data.class_names, identity, *strategy, validation.count > 0);
    try {
      trainer.fit(train, validation.count ? &validation : nullptr, callbacks.list());
    } catch (const Error& e) {
      // Every rank stops on the same non-finite loss: rank 0 commits the checkpoint in flight before
      // any rank ends the job.
      if (e.kind() == ErrorKind::Numeric && callbacks.backup) callbacks.backup->settle();
      throw;
    }
    if (callbacks.backup && callbacks.backup->finished_before()) return 0;  // nothing trained, nothing to save
    const EvalResult test = trainer.evaluate(data.test);
    if (chief) std::printf("test_loss: %.4f - test_accuracy: %.4f\n", test.loss, test.accuracy);
    if (!a.output.empty() && chief)
      save_run(a, model, opt, identity, trainer, data.class_names, test, callbacks.backup);
    return 0;
  };
  return cmd;
}

}  // namespace tandem::cli

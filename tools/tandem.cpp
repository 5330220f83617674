// tandem: the command-line entry point. Each subcommand lives in its own file:
//   cmd_train.cpp     defines: train (fit Fashion-MNIST, evaluate, save a model version)
//   cmd_model.cpp     defines: evaluate, predict, summary (work on a saved model version)
//   cmd_inspect.cpp   defines: inspect (tensors, checksums, digest, --compare)
// Only this file catches errors: one clear message, exit 2 for bad input and 1 otherwise.
#include <cstdio>
#include <exception>
#include <new>

#include "engine/errors.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Tandem: synchronous data-parallel training of neural networks", "tandem"};
  app.set_version_flag("--version", std::string("tandem ") + TANDEM_VERSION);
  app.require_subcommand(1);
  std::vector<tandem::cli::Command> commands = {
      tandem::cli::add_train(app),   tandem::cli::add_evaluate(app), tandem::cli::add_predict(app),
      tandem::cli::add_summary(app), tandem::cli::add_inspect(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
    return 2;
  } catch (const tandem::Error& e) {
    std::fprintf(stderr, "tandem: %s: %s\n", tandem::error_kind_name(e.kind()), e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "  hint: %s\n", e.hint().c_str());
    return e.exit_status();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tandem: out of memory\n  hint: try a smaller --batch-size or model\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem: internal error: %s\n  hint: please report this as a bug\n", e.what());
    return 1;
  }
}

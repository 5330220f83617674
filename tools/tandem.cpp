// tandem: the command-line entry point. Each subcommand lives in its own file:
//   cmd_train.cpp     defines: train (fit Fashion-MNIST, evaluate, save a model version)
//   cmd_model.cpp     defines: evaluate, predict, summary (work on a saved model version)
//   cmd_inspect.cpp   defines: inspect (tensors, checksums, digest, --compare, exported formats)
//   cmd_export.cpp    defines: export (SavedModel / ONNX / native versions for serving)
//   cmd_serve.cpp     defines: serve (a TensorFlow Serving-compatible server, serve/)
// Only this file catches errors: one clear message, exit 2 for bad input and 1 otherwise.
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "dist/communicator.h"
#include "engine/errors.h"
#include "tools/cli.h"

// Prints one error (prefixed with the rank in a multi-process job) and, in such a job, ends every
// rank so that none is left waiting in a collective.
static int fail(int status, const std::string& message, const std::string& hint) {
  int rank = tandem::distributed_rank();
  std::string prefix = rank >= 0 ? "[rank " + std::to_string(rank) + "] tandem: " : "tandem: ";
  std::fprintf(stderr, "%s%s\n", prefix.c_str(), message.c_str());
  if (!hint.empty()) std::fprintf(stderr, "  hint: %s\n", hint.c_str());
  std::fflush(stderr);
  tandem::abort_job_if_distributed(status);
  return status;
}

int main(int argc, char** argv) {
  CLI::App app{"Tandem: synchronous data-parallel training of neural networks", "tandem"};
  app.set_version_flag("--version", std::string("tandem ") + TANDEM_VERSION);
  app.require_subcommand(1);
  std::vector<tandem::cli::Command> commands = {
      tandem::cli::add_train(app),   tandem::cli::add_evaluate(app), tandem::cli::add_predict(app),
      tandem::cli::add_summary(app), tandem::cli::add_inspect(app),  tandem::cli::add_export(app),
#ifdef TANDEM_HAVE_SERVE
      tandem::cli::add_serve(app),
#endif
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
    std::string hint = e.hint();
    if (hint.empty() && e.kind() == tandem::ErrorKind::InvalidArgument) hint = "see 'tandem COMMAND --help'";
    return fail(e.exit_status(), std::string(tandem::error_kind_name(e.kind())) + ": " + e.what(), hint);
  } catch (const std::bad_alloc&) {
    return fail(1, "out of memory", "try a smaller --batch-size or model");
  } catch (const std::exception& e) {
    return fail(1, std::string("internal error: ") + e.what(), "please report this as a bug");
  }
}

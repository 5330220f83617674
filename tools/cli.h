// Shared pieces of the `tandem` subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "storage/loaded_model.h"
#include "storage/model_dir.h"

namespace tandem::cli {

// Registers a subcommand; `run` is called after a successful parse and returns the exit status.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_train(CLI::App& root);
Command add_evaluate(CLI::App& root);
Command add_predict(CLI::App& root);
Command add_summary(CLI::App& root);
Command add_inspect(CLI::App& root);
Command add_export(CLI::App& root);
Command add_serve(CLI::App& root);  // tools/cmd_serve.cpp

int default_threads();

}  // namespace tandem::cli

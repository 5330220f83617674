#include "tools/train_args.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "engine/errors.h"

namespace tandem::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// A whole positive number, or 0 when `text` is not one.
int64_t positive_integer(const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  return (!text.empty() && *end == '\0' && v > 0) ? v : 0;
}

// --reduce-lr-on-plateau FACTOR[,PATIENCE]: FACTOR in (0, 1), PATIENCE a positive number of epochs.
std::pair<double, int> parse_plateau(const std::string& text) {
  const std::string hint = "e.g. --reduce-lr-on-plateau 0.5 or 0.5,3 (FACTOR in (0, 1), PATIENCE epochs, default 10)";
  char* end = nullptr;
  const double factor = std::strtod(text.c_str(), &end);
  long patience = 10;
  if (*end == ',') {
    const char* p = end + 1;
    patience = std::strtol(p, &end, 10);
    if (end == p) patience = 0;
  }
  if (*end != '\0' || !(factor > 0 && factor < 1) || patience <= 0 || patience > 1000000)
    throw_invalid("--reduce-lr-on-plateau must be FACTOR[,PATIENCE] with FACTOR in (0, 1) and PATIENCE a positive "
                  "number of epochs, got '" + text + "'",
                  hint);
  return {factor, static_cast<int>(patience)};
}

void check_optimizer_flags(const TrainArgs& a) {
  if (a.lr_given && !(std::isfinite(a.lr) && a.lr > 0))
    throw_invalid("--lr must be a finite positive number, got " + format_double(a.lr), "e.g. --lr 0.01");
  if (a.momentum_given && !(a.momentum >= 0 && a.momentum < 1))
    throw_invalid("--momentum must be in [0, 1), got " + format_double(a.momentum), "e.g. --momentum 0.9");
  if (!(a.decay_rate > 0 && a.decay_rate <= 1))
    throw_invalid("--lr-decay-rate must be in (0, 1], got " + format_double(a.decay_rate),
                  "e.g. --lr-decay-rate 0.8; 1 keeps the rate constant");
  if (a.momentum_given && a.optimizer != "sgd")
    throw_invalid("--momentum applies to --optimizer sgd only", "drop --momentum, or add --optimizer sgd");
}

}  // namespace

void add_train_flags(CLI::App& c, TrainArgs& a) {
  StrategySpec& s = a.strategy;
  c.add_option("--model", a.model, "mlp, cnn, or a model spec FILE.json")->capture_default_str();
  c.add_option("--data", a.data, "directory with the Fashion-MNIST IDX files (default: $TANDEM_DATA or "
                                 "/usr/share/datasets/fashion-mnist)");
  c.add_option("--epochs", a.epochs, "number of epochs")->capture_default_str();
  c.add_option("--batch-size", a.batch_size, "global batch size")->capture_default_str();
  c.add_option("--optimizer", a.optimizer, "sgd or adam")->capture_default_str();
  a.lr_option = c.add_option("--lr", a.lr, "learning rate (default: 0.01 for sgd, 0.001 for adam)");
  a.momentum_option = c.add_option("--momentum", a.momentum, "SGD momentum in [0, 1) (default 0.9, with Nesterov)");
  c.add_flag("--nesterov", a.nesterov, "Nesterov momentum (with an explicit --momentum)");
  c.add_option("--lr-schedule", a.schedule, "none, exponential or step")->capture_default_str();
  c.add_option("--lr-decay-rate", a.decay_rate, "multiply the rate by this every decay period")->capture_default_str();
  c.add_option("--lr-decay-steps", a.decay_steps, "decay period in steps (default: one epoch)");
  c.add_option("--seed", a.seed, "seed for weights, shuffling and dropout")->capture_default_str();
  c.add_option("--threads", s.threads, "CPU threads (default: all cores)");
  c.add_option("--validation-size", a.validation_size, "first N training images held out for validation")
      ->capture_default_str();
  c.add_option("--train-samples", a.train_samples,
               "train on only the first N training images after the split (quick runs, benchmarks)");
  c.add_flag("--one-hot", a.one_hot, "one-hot labels with categorical cross-entropy");
  c.add_option("--output", a.output, "write DIR/model/<version>/, DIR/history.json and DIR/metrics.json");
  c.add_option("--device", s.device, "cpu or gpu:N (default and multi-worker strategies)")->capture_default_str();
  c.add_option("--precision", s.precision, "GPU math: fp32, or tf32 (TF32 tensor cores in cuBLAS/cuDNN)")
      ->capture_default_str();
  c.add_option("--strategy", s.name, "default, mirrored, central-storage or multi-worker (under mpirun)")
      ->capture_default_str();
  c.add_option("--devices", s.devices,
               "replicas for mirrored / central-storage, e.g. gpu:0,gpu:1 or cpu:0,cpu:1,cpu:2,cpu:3");
  c.add_option("--bucket-mb", s.bucket_mb, "gradient bucket size for all-reduce, MiB")->capture_default_str();
  c.add_flag("--no-overlap", a.no_overlap, "all-reduce after backward instead of during it");
  c.add_option("--cuda-graphs", a.cuda_graphs,
               "on: capture a full-batch training step as a CUDA graph and replay it (one GPU, default "
               "strategy; others run eagerly); off: launch every kernel eagerly, for debugging")
      ->capture_default_str();
  c.add_option("--batch-invariant", s.batch_invariant,
               "LEAVES (a power of 2): cut every global batch into LEAVES micro-batches and sum their gradients in "
               "one fixed tree, so the weights are bit-identical for any replica count dividing LEAVES and any "
               "thread count (slower; BatchNormalization statistics become per leaf)");
  c.add_option("--check-replicas", a.check_replicas,
               "verify all replicas hold bit-identical weights every N steps (0: at each epoch end)");
  c.add_option("--checkpoint-every", a.checkpoint_every,
               "commit a checkpoint every N steps, or at every epoch end with 'epoch' (needs --output)");
  c.add_option("--keep-checkpoints", a.keep_checkpoints, "committed checkpoints to keep")->capture_default_str();
  c.add_option("--resume", a.resume,
               "continue the run whose --output was DIR from its latest committed checkpoint (same arguments; "
               "--epochs may grow)");
  c.add_option("--save-best", a.save_best,
               "val_loss or val_accuracy: keep the best epoch's weights in DIR/best_model and save them as the model");
  c.add_option("--early-stopping", a.early_stopping,
               "stop after PATIENCE epochs without improvement of the monitored metric (--save-best, else val_loss)");
  c.add_option("--csv-log", a.csv_log,
               "append one row per epoch to FILE (Keras's CSVLogger columns; a resumed run continues it)");
  c.add_option("--reduce-lr-on-plateau", a.reduce_lr_on_plateau,
               "FACTOR[,PATIENCE]: multiply the rate by FACTOR after PATIENCE (10) epochs without a lower val_loss");
  c.add_option("--tensorboard", a.tensorboard,
               "write TensorBoard event files to DIR/train and DIR/validation (tensorboard --logdir DIR)");
  c.add_option("--tensorboard-update-freq", a.tensorboard_update_freq,
               "epoch: scalars per epoch; batch or N: also the running loss and accuracy every 1 or N steps")
      ->capture_default_str();
  c.add_option("--timeline", a.timeline,
               "write a Chrome trace of every rank's steps to FILE (chrome://tracing, ui.perfetto.dev)");
  c.add_option("--collective-timeout", s.collective_timeout,
               "seconds a rank may be missing from a collective before the job is aborted (and, for jobs "
               "launched by TF_CONFIG or torchrun's variables, how long the start-up rendezvous waits)")
      ->capture_default_str();
  c.add_option("--communicator", s.communicator,
               "gradient all-reduce: auto (NCCL for GPU replicas when built with it, else MPI, or Gloo for jobs "
               "launched by TF_CONFIG / torchrun's variables), nccl, mpi or gloo")
      ->capture_default_str();
}

void check(TrainArgs& a) {
  a.lr_given = a.lr_option && a.lr_option->count() > 0;
  a.momentum_given = a.momentum_option && a.momentum_option->count() > 0;
  a.strategy.overlap = !a.no_overlap;
  if (a.epochs < 0) throw_invalid("--epochs must be at least 0, got " + std::to_string(a.epochs), "e.g. --epochs 10");
  if (a.batch_size <= 0)
    throw_invalid("--batch-size must be positive, got " + std::to_string(a.batch_size), "e.g. --batch-size 32");
  if (a.train_samples < 0) throw_invalid("--train-samples must be positive");
  check_optimizer_flags(a);
  if (a.cuda_graphs != "on" && a.cuda_graphs != "off")
    throw_invalid("--cuda-graphs must be on or off, got '" + a.cuda_graphs + "'");
  if (!a.resume.empty()) {
    if (!a.output.empty() && fs::path(a.output).lexically_normal() != fs::path(a.resume).lexically_normal())
      throw_invalid("--resume " + a.resume + " and --output " + a.output + " name different directories",
                    "--resume DIR continues in DIR; drop --output");
    a.output = a.resume;
    // A missing DIR is a run killed before it wrote anything (the same command line restarts
    // it): it starts from the beginning, as an empty one does. Anything else must be a directory.
    std::error_code ec;
    if (fs::exists(a.output, ec) && !fs::is_directory(a.output, ec))
      throw_io("--resume: '" + a.output + "' is not a directory", "give the --output DIR of the run to continue");
  }
  if (!a.checkpoint_every.empty()) {
    if (a.output.empty()) throw_invalid("--checkpoint-every needs --output DIR (checkpoints go to DIR/checkpoints)");
    a.checkpoint_epochs = a.checkpoint_every == "epoch";
    a.checkpoint_steps = positive_integer(a.checkpoint_every);
    if (!a.checkpoint_epochs && a.checkpoint_steps == 0)
      throw_invalid("--checkpoint-every must be a positive number of steps or 'epoch', got '" + a.checkpoint_every +
                    "'");
  }
  if (!a.save_best.empty() && a.save_best != "val_loss" && a.save_best != "val_accuracy")
    throw_invalid("--save-best must be val_loss or val_accuracy, got '" + a.save_best + "'");
  if (a.early_stopping < 0) throw_invalid("--early-stopping must be a positive number of epochs");
  if ((!a.save_best.empty() || a.early_stopping > 0) && a.validation_size == 0)
    throw_invalid("--save-best and --early-stopping monitor validation metrics", "use --validation-size > 0");
  if (!a.reduce_lr_on_plateau.empty()) {
    a.plateau = parse_plateau(a.reduce_lr_on_plateau);
    if (a.validation_size == 0) throw_invalid("--reduce-lr-on-plateau monitors val_loss", "use --validation-size > 0");
  }
  if (!a.save_best.empty()) a.monitor = a.save_best;
  const std::string& freq = a.tensorboard_update_freq;
  a.tensorboard_steps = freq == "epoch" ? 0 : freq == "batch" ? 1 : positive_integer(freq);
  if (freq != "epoch" && a.tensorboard_steps == 0)
    throw_invalid("--tensorboard-update-freq must be epoch, batch or a positive number of steps, got '" + freq + "'",
                  "e.g. --tensorboard-update-freq 100");
  if (freq != "epoch" && a.tensorboard.empty())
    throw_invalid("--tensorboard-update-freq needs --tensorboard DIR");
}

OptimizerConfig optimizer_config(const TrainArgs& a, int64_t steps_per_epoch) {
  OptimizerConfig o;
  o.name = a.optimizer;
  // Default: Adam 1e-3 with the rate decayed by 0.8 per epoch, chosen by measurement
  // (benchmarks/RESULTS.md, "Choice of defaults"). The flags were checked by check().
  if (o.name == "sgd") {
    o.lr = a.lr_given ? a.lr : 0.01;
    o.momentum = a.momentum_given ? a.momentum : 0.9;
    o.nesterov = a.momentum_given ? a.nesterov : true;
  } else {
    o.lr = a.lr_given ? a.lr : 0.001;
  }
  o.schedule.type = a.schedule;
  o.schedule.decay_rate = a.decay_rate;
  o.schedule.decay_steps = a.decay_steps > 0 ? a.decay_steps : steps_per_epoch;
  o.validate();
  return o;
}

TrainOptions train_options(const TrainArgs& a) {
  TrainOptions o;
  o.epochs = a.epochs;
  o.batch_size = a.batch_size;
  o.seed = a.seed;
  o.one_hot = a.one_hot;
  o.leaves = a.strategy.batch_invariant;
  o.check_replicas = a.check_replicas >= 0;
  o.check_replicas_every = std::max<int64_t>(0, a.check_replicas);
  o.cuda_graphs = a.cuda_graphs == "on";
  return o;
}

json run_identity(const TrainArgs& a, const Model& model, const OptimizerConfig& opt, bool gpu,
                  int64_t train_samples, int64_t validation_samples) {
  json identity{{"model", model.spec()},
                {"seed", a.seed},
                {"batch_size", a.batch_size},
                {"train_samples", train_samples},
                {"validation_samples", validation_samples},
                {"one_hot", a.one_hot},
                {"optimizer", opt.name},
                {"lr", opt.lr},
                {"momentum", opt.momentum},
                {"nesterov", opt.nesterov},
                {"schedule", opt.schedule.type},
                {"decay_rate", opt.schedule.decay_rate},
                {"decay_steps", opt.schedule.decay_steps},
                {"central_storage", a.strategy.name == "central-storage"},
                {"batch_invariant", a.strategy.batch_invariant},  // the leaves shape the sums
                {"precision", a.strategy.precision},
                {"device_kind", gpu ? "gpu" : "cpu"}};
  if (!a.reduce_lr_on_plateau.empty())  // only when given: checkpoints without it keep their identity
    identity["reduce_lr_on_plateau"] = {a.plateau.first, a.plateau.second};
  return identity;
}

}  // namespace tandem::cli

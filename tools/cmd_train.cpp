// tandem train: fit a model on Fashion-MNIST, evaluate on the test set, save the results.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>

#include "dist/bucketed_allreduce.h"
#include "dist/communicator.h"
#include "dist/nccl_sync.h"
#include "engine/errors.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif
#include "engine/trainer.h"
#include "export/atomic_file.h"
#include "tools/callbacks/backup_and_restore.h"  // defines: BackupAndRestore (--checkpoint-every, --resume)
#include "tools/callbacks/csv_logger.h"          // defines: CSVLogger (--csv-log)
#include "tools/callbacks/early_stopping.h"      // defines: EarlyStopping (--early-stopping)
#include "tools/callbacks/model_checkpoint.h"    // defines: ModelCheckpoint (--save-best)
#include "tools/callbacks/progress_bar.h"        // defines: ProgressBar (Keras's progress output)
#include "tools/callbacks/reduce_lr_on_plateau.h"  // defines: ReduceLROnPlateau (--reduce-lr-on-plateau)
#include "tools/callbacks/terminate_on_nan.h"    // defines: TerminateOnNaN (always on)
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
  std::string optimizer = "adam";
  double lr = 0;  // with lr_given; else the optimizer's default
  double momentum = 0;
  bool lr_given = false, momentum_given = false;
  bool nesterov = false;
  std::string schedule = "exponential";
  double decay_rate = 0.8;
  int64_t decay_steps = 0;
  uint64_t seed = 42;
  int threads = 0;
  int64_t validation_size = 5000;
  int64_t train_samples = 0;  // 0 = all
  bool one_hot = false;
  std::string output;
  std::string device = "cpu";
  std::string precision = "fp32";
  std::string strategy = "default";
  std::string devices;
  double bucket_mb = 25;
  bool no_overlap = false;
  int64_t check_replicas = -1;  // -1 = off; 0 = at the end of every epoch; N = every N steps too
  double collective_timeout = 300;
  std::string communicator = "auto";
  std::string cuda_graphs = "on";
  int batch_invariant = 0;  // leaves; 0 = off
  std::string checkpoint_every;  // "epoch" or a number of steps
  int keep_checkpoints = 3;
  std::string resume;
  std::string save_best;  // val_loss | val_accuracy
  int early_stopping = 0;
  std::string csv_log;
  std::string reduce_lr_on_plateau;  // FACTOR[,PATIENCE]
};

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

std::string iso_time_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// "a, b, c": the keys of a JSON object, for messages.
std::string join_keys(const json& object) {
  std::string out;
  for (auto it = object.begin(); it != object.end(); ++it) out += (out.empty() ? "" : ", ") + it.key();
  return out;
}

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// An explicit value is never replaced by a default: it is valid or it is an error. Checked before
// anything is written or loaded.
void validate_optimizer_flags(const TrainArgs& a) {
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

OptimizerConfig optimizer_config(const TrainArgs& a, int64_t steps_per_epoch) {
  OptimizerConfig o;
  o.name = a.optimizer;
  // Default: Adam 1e-3 with the rate decayed by 0.8 per epoch, chosen by measurement
  // (benchmarks/RESULTS.md, "Choice of defaults"). The flags were checked by validate_optimizer_flags.
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

// Where the replicas run: their backends, and the communicator for multi-worker jobs.
struct Placement {
  std::unique_ptr<Communicator> comm;
  std::vector<std::unique_ptr<Backend>> backends;
};

std::vector<Device> parse_devices(const std::string& list) {
  std::vector<Device> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw_invalid("--devices '" + list + "' has an empty entry", "write e.g. gpu:0,gpu:1");
    Device d = Device::parse(item);
    for (const auto& e : out)
      if (e == d) throw_invalid("--devices lists " + d.str() + " twice", "each replica needs its own device");
    out.push_back(d);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// A backend for one replica, with the requested GPU precision.
std::unique_ptr<Backend> make_replica_backend(const Device& d, int threads, const std::string& precision) {
  if (precision != "fp32" && precision != "tf32")
    throw_invalid("--precision must be fp32 or tf32, got '" + precision + "'");
  if (precision == "tf32" && d.kind == DeviceKind::Cpu)
    throw_invalid("--precision tf32 applies to GPUs only", "drop --precision, or use --device gpu:N");
  std::unique_ptr<Backend> b = make_backend(d, threads);
#ifdef TANDEM_HAVE_CUDA
  if (d.kind == DeviceKind::Gpu) cuda_set_precision(*b, parse_gpu_precision(precision));
#endif
  return b;
}

Placement place_replicas(const TrainArgs& a) {
  Placement p;
  const std::string& s = a.strategy;
  if (s == "tpu" || s == "tpu-strategy")
    throw_invalid("--strategy tpu: TPUs are not supported by Tandem",
                  "use mirrored (GPUs in one process) or multi-worker (mpirun)");
  if (s != "default" && s != "one-device" && s != "mirrored" && s != "central-storage" && s != "multi-worker")
    throw_invalid("unknown strategy '" + s + "'", "use default, mirrored, central-storage or multi-worker");
  if (s == "multi-worker") {
    if (!a.devices.empty()) throw_invalid("--devices is for mirrored and central-storage", "multi-worker uses one device per rank: --device cpu or --device gpu");
    p.comm = make_mpi_communicator(true);
    Device d = Device::parse(a.device);
    if (d.kind == DeviceKind::Gpu) d.index = p.comm->local_rank();  // one GPU per local rank
    int threads = a.threads ? a.threads : std::max(1, default_threads() / p.comm->local_size());
    p.backends.push_back(make_replica_backend(d, threads, a.precision));
    return p;
  }
  std::vector<Device> devices;
  if (s == "mirrored" || s == "central-storage") {
    if (a.devices.empty()) throw_invalid("--strategy " + s + " needs --devices", "e.g. --devices gpu:0,gpu:1 or --devices cpu:0,cpu:1");
    devices = parse_devices(a.devices);
  } else {
    if (!a.devices.empty()) throw_invalid("--devices needs --strategy mirrored or central-storage");
    devices.push_back(Device::parse(a.device));
  }
  int total = a.threads ? a.threads : default_threads();
  int per = std::max(1, total / static_cast<int>(devices.size()));
  for (const auto& d : devices) p.backends.push_back(make_replica_backend(d, per, a.precision));
  return p;
}

}  // namespace

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
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
  CLI::Option* lr_option = c->add_option("--lr", args->lr, "learning rate (default: 0.01 for sgd, 0.001 for adam)");
  CLI::Option* momentum_option =
      c->add_option("--momentum", args->momentum, "SGD momentum in [0, 1) (default 0.9, with Nesterov)");
  c->add_flag("--nesterov", args->nesterov, "Nesterov momentum (with an explicit --momentum)");
  c->add_option("--lr-schedule", args->schedule, "none, exponential or step")->capture_default_str();
  c->add_option("--lr-decay-rate", args->decay_rate, "multiply the rate by this every decay period")
      ->capture_default_str();
  c->add_option("--lr-decay-steps", args->decay_steps, "decay period in steps (default: one epoch)");
  c->add_option("--seed", args->seed, "seed for weights, shuffling and dropout")->capture_default_str();
  c->add_option("--threads", args->threads, "CPU threads (default: all cores)");
  c->add_option("--validation-size", args->validation_size, "first N training images held out for validation")
      ->capture_default_str();
  c->add_option("--train-samples", args->train_samples,
                 "train on only the first N training images after the split (quick runs, benchmarks)");
  c->add_flag("--one-hot", args->one_hot, "one-hot labels with categorical cross-entropy");
  c->add_option("--output", args->output, "write DIR/model/<version>/, DIR/history.json and DIR/metrics.json");
  c->add_option("--device", args->device, "cpu or gpu:N (default and multi-worker strategies)")
      ->capture_default_str();
  c->add_option("--precision", args->precision, "GPU math: fp32, or tf32 (TF32 tensor cores in cuBLAS/cuDNN)")
      ->capture_default_str();
  c->add_option("--strategy", args->strategy, "default, mirrored, central-storage or multi-worker (under mpirun)")
      ->capture_default_str();
  c->add_option("--devices", args->devices,
                "replicas for mirrored / central-storage, e.g. gpu:0,gpu:1 or cpu:0,cpu:1,cpu:2,cpu:3");
  c->add_option("--bucket-mb", args->bucket_mb, "gradient bucket size for all-reduce, MiB")->capture_default_str();
  c->add_flag("--no-overlap", args->no_overlap, "all-reduce after backward instead of during it");
  c->add_option("--cuda-graphs", args->cuda_graphs,
                "on: capture a full-batch training step as a CUDA graph and replay it (one GPU, default "
                "strategy; others run eagerly); off: launch every kernel eagerly, for debugging")
      ->capture_default_str();
  c->add_option("--batch-invariant", args->batch_invariant,
                "LEAVES (a power of 2): cut every global batch into LEAVES micro-batches and sum their gradients in "
                "one fixed tree, so the weights are bit-identical for any replica count dividing LEAVES and any "
                "thread count (slower; BatchNormalization statistics become per leaf)");
  c->add_option("--check-replicas", args->check_replicas,
                "verify all replicas hold bit-identical weights every N steps (0: at each epoch end)");
  c->add_option("--checkpoint-every", args->checkpoint_every,
                "commit a checkpoint every N steps, or at every epoch end with 'epoch' (needs --output)");
  c->add_option("--keep-checkpoints", args->keep_checkpoints, "committed checkpoints to keep")->capture_default_str();
  c->add_option("--resume", args->resume,
                "continue the run whose --output was DIR from its latest committed checkpoint (same arguments; "
                "--epochs may grow)");
  c->add_option("--save-best", args->save_best,
                "val_loss or val_accuracy: keep the best epoch's weights in DIR/best_model and save them as the model");
  c->add_option("--early-stopping", args->early_stopping,
                "stop after PATIENCE epochs without improvement of the monitored metric (--save-best, else val_loss)");
  c->add_option("--csv-log", args->csv_log,
                "append one row per epoch to FILE (Keras's CSVLogger columns; a resumed run continues it)");
  c->add_option("--reduce-lr-on-plateau", args->reduce_lr_on_plateau,
                "FACTOR[,PATIENCE]: multiply the rate by FACTOR after PATIENCE (10) epochs without a lower val_loss");
  c->add_option("--collective-timeout", args->collective_timeout,
                "seconds a rank may be missing from a collective before the job is aborted")
      ->capture_default_str();
  c->add_option("--communicator", args->communicator,
                "gradient all-reduce: auto (NCCL for GPU replicas when built with it, else MPI), nccl or mpi")
      ->capture_default_str();

  Command cmd;
  cmd.app = c;
  cmd.run = [args, lr_option, momentum_option]() -> int {
    args->lr_given = lr_option->count() > 0;
    args->momentum_given = momentum_option->count() > 0;
    const TrainArgs& a = *args;
    if (a.threads < 0 || a.threads > 1024) throw_invalid("--threads must be between 1 and 1024");
    if (a.epochs < 0) throw_invalid("--epochs must be at least 0, got " + std::to_string(a.epochs), "e.g. --epochs 10");
    if (a.batch_size <= 0)
      throw_invalid("--batch-size must be positive, got " + std::to_string(a.batch_size), "e.g. --batch-size 32");
    validate_optimizer_flags(a);
    std::string output = a.output;
    if (!a.resume.empty()) {
      if (!output.empty() && fs::path(output).lexically_normal() != fs::path(a.resume).lexically_normal())
        throw_invalid("--resume " + a.resume + " and --output " + output + " name different directories",
                      "--resume DIR continues in DIR; drop --output");
      output = a.resume;
      // A missing DIR is a run killed before it wrote anything (the same command line restarts
      // it): it starts from the beginning, as an empty one does. Anything else must be a directory.
      std::error_code ec;
      if (fs::exists(output, ec) && !fs::is_directory(output, ec))
        throw_io("--resume: '" + output + "' is not a directory", "give the --output DIR of the run to continue");
    }
    int64_t checkpoint_steps = 0;
    bool checkpoint_epochs = false;
    if (!a.checkpoint_every.empty()) {
      if (output.empty()) throw_invalid("--checkpoint-every needs --output DIR (checkpoints go to DIR/checkpoints)");
      if (a.checkpoint_every == "epoch") {
        checkpoint_epochs = true;
      } else {
        char* end = nullptr;
        long long v = std::strtoll(a.checkpoint_every.c_str(), &end, 10);
        if (*end != '\0' || v <= 0)
          throw_invalid("--checkpoint-every must be a positive number of steps or 'epoch', got '" +
                        a.checkpoint_every + "'");
        checkpoint_steps = v;
      }
    }
    if (!a.save_best.empty() && a.save_best != "val_loss" && a.save_best != "val_accuracy")
      throw_invalid("--save-best must be val_loss or val_accuracy, got '" + a.save_best + "'");
    if (a.early_stopping < 0) throw_invalid("--early-stopping must be a positive number of epochs");
    if ((!a.save_best.empty() || a.early_stopping > 0) && a.validation_size == 0)
      throw_invalid("--save-best and --early-stopping monitor validation metrics", "use --validation-size > 0");
    std::pair<double, int> plateau{0, 0};
    if (!a.reduce_lr_on_plateau.empty()) {
      plateau = parse_plateau(a.reduce_lr_on_plateau);
      if (a.validation_size == 0)
        throw_invalid("--reduce-lr-on-plateau monitors val_loss", "use --validation-size > 0");
    }
    const std::string monitor = a.save_best.empty() ? "val_loss" : a.save_best;
    Model model = Model::from_name_or_file(a.model);
    Placement placement = place_replicas(a);
    const bool rank0 = !placement.comm || placement.comm->rank() == 0;
    std::vector<Backend*> backends;
    for (auto& b : placement.backends) backends.push_back(b.get());
    // Refuse an unusable output directory before spending time on training.
    if (!output.empty() && rank0) {
      std::error_code ec;
      fs::create_directories(output, ec);
      if (ec || !fs::is_directory(output))
        throw_io("cannot create output directory '" + output + "'", "choose a writable --output DIR");
    }

    LabelledData data = load_fashion_mnist(resolve_data_dir(a.data));
    auto [train, validation] = split_validation(data.train, a.validation_size);
    if (a.train_samples < 0) throw_invalid("--train-samples must be positive");
    if (a.train_samples > 0 && a.train_samples < train.count) train = train.slice(0, a.train_samples);
    const int64_t steps_per_epoch = (train.count + a.batch_size - 1) / a.batch_size;
    OptimizerConfig opt = optimizer_config(a, steps_per_epoch);
    TrainOptions options;
    options.epochs = a.epochs;
    options.batch_size = a.batch_size;
    options.seed = a.seed;
    options.one_hot = a.one_hot;
    options.central_storage = a.strategy == "central-storage";
    options.leaves = a.batch_invariant;
    options.check_replicas = a.check_replicas >= 0;
    options.check_replicas_every = std::max<int64_t>(0, a.check_replicas);
    if (a.bucket_mb <= 0 || a.bucket_mb > 4096) throw_invalid("--bucket-mb must be in (0, 4096]");
    if (!(a.collective_timeout > 0)) throw_invalid("--collective-timeout must be positive (seconds)");

    std::unique_ptr<GradientSync> sync;
    std::unique_ptr<LocalReduce> local_reduce;
    const bool gpu_replicas = std::all_of(backends.begin(), backends.end(),
                                          [](Backend* b) { return b->device().kind == DeviceKind::Gpu; });
    if (a.cuda_graphs != "on" && a.cuda_graphs != "off")
      throw_invalid("--cuda-graphs must be on or off, got '" + a.cuda_graphs + "'");
    options.cuda_graphs = a.cuda_graphs == "on";
    if (a.communicator != "auto" && a.communicator != "nccl" && a.communicator != "mpi")
      throw_invalid("--communicator must be auto, nccl or mpi, got '" + a.communicator + "'");
    if (a.communicator == "nccl" && !gpu_replicas) throw_invalid("--communicator nccl needs GPU replicas", "use --device gpu");
    if (a.communicator == "nccl" && !nccl_available())
      throw_invalid("--communicator nccl: this build of Tandem has no NCCL support",
                    "build with CUDA and NCCL, or use --communicator mpi");
    if (a.communicator == "nccl" && a.batch_invariant > 0)
      throw_invalid("--batch-invariant cannot use --communicator nccl: NCCL does not fix the order of its sums",
                    "use --communicator mpi (or auto), or drop --batch-invariant");
    // NCCL where the replicas are GPUs and it is built in; MPI (host buffers) otherwise, and for
    // batch invariance (its tree all-reduce).
    const bool use_nccl = gpu_replicas && nccl_available() && a.communicator != "mpi" && a.batch_invariant == 0;
    const size_t bucket_bytes = static_cast<size_t>(a.bucket_mb * 1048576.0);
    // The run's identity: everything that shapes the computation. Ranks of a job must agree on it
    // (with how the job runs it, below), and a resumed run must match the checkpoint's. The
    // replica count may change on resume: shuffling, dropout and the global batch do not depend on it.
    json identity{{"model", model.spec()},
                        {"seed", a.seed},
                        {"batch_size", a.batch_size},
                        {"train_samples", train.count},
                        {"validation_samples", validation.count},
                        {"one_hot", a.one_hot},
                        {"optimizer", opt.name},
                        {"lr", opt.lr},
                        {"momentum", opt.momentum},
                        {"nesterov", opt.nesterov},
                        {"schedule", opt.schedule.type},
                        {"decay_rate", opt.schedule.decay_rate},
                        {"decay_steps", opt.schedule.decay_steps},
                        {"central_storage", options.central_storage},
                        {"batch_invariant", a.batch_invariant},  // the leaves shape the sums
                        {"precision", a.precision},
                        {"device_kind", gpu_replicas ? "gpu" : "cpu"}};
    if (!a.reduce_lr_on_plateau.empty())  // only when given: checkpoints without it keep their identity
      identity["reduce_lr_on_plateau"] = {plateau.first, plateau.second};
    if (placement.comm) {
      const std::string collectives = use_nccl ? "nccl" : "mpi";
      // Ranks agree on the run's identity, and on how this job runs it, before any training collective.
      json config = identity;
      config["epochs"] = a.epochs;
      config["strategy"] = a.strategy;
      config["bucket_mb"] = a.bucket_mb;
      config["ranks"] = placement.comm->size();
      config["collectives"] = collectives;
      placement.comm->start_watchdog(a.collective_timeout);
      require_same_on_all_ranks(*placement.comm,
                                "the run configuration (" + join_keys(config) + ")", config.dump());
      if (use_nccl)
        sync = make_nccl_gradient_sync(*placement.comm, model, *backends[0], bucket_bytes, !a.no_overlap,
                                       a.collective_timeout);
      else {
        auto bucketed = std::make_unique<BucketedAllReduce>(*placement.comm, model, bucket_bytes, !a.no_overlap,
                                                            a.collective_timeout);
        bucketed->set_tree(a.batch_invariant > 0);
        sync = std::move(bucketed);
      }
      if (rank0)
        std::printf("multi-worker: %d ranks (%s gradients, %s%s), %d per node, %zu gradient buckets\n",
                    placement.comm->size(), collectives.c_str(), placement.comm->name().c_str(),
                    a.batch_invariant > 0 ? ", tree all-reduce" : "", placement.comm->local_size(),
                    plan_buckets(model, bucket_bytes).size());
    } else if (backends.size() > 1) {
      std::string how = "summed on the host";
      // GPU replicas are on distinct GPUs (parse_devices refuses a device listed twice).
      if (gpu_replicas && !options.central_storage && use_nccl) {  // (never with --batch-invariant)
        local_reduce = make_nccl_local_reduce(backends);
        how = "nccl all-reduce";
      }
      std::printf("%s: %zu replicas (%s), gradients %s\n", a.strategy.c_str(), backends.size(), a.devices.c_str(),
                  how.c_str());
    }

    Trainer trainer(model, backends, options, opt, sync.get());
    if (local_reduce) trainer.set_local_reduce(local_reduce.get());

    if (a.batch_invariant > 0) {
      if (rank0)
        std::printf("batch-invariant: %d leaves of %lld samples, gradients summed in one fixed tree\n",
                    a.batch_invariant, static_cast<long long>(a.batch_size / a.batch_invariant));
    }
    // The callbacks, in the order they run. BackupAndRestore comes before those that recover their
    // state from a resumed run's history.
    std::vector<std::unique_ptr<Callback>> callbacks;
    callbacks.push_back(std::make_unique<TerminateOnNaN>());
    BackupAndRestore* backup = nullptr;
    if (checkpoint_steps || checkpoint_epochs || !a.resume.empty()) {
      BackupAndRestore::Options b;
      b.root = (fs::path(output) / "checkpoints").string();
      b.identity = identity;
      b.every_steps = checkpoint_steps;
      b.every_epoch = checkpoint_epochs;
      b.keep = a.keep_checkpoints;
      b.resume = !a.resume.empty();
      callbacks.push_back(std::make_unique<BackupAndRestore>(std::move(b), placement.comm.get(), rank0));
      backup = static_cast<BackupAndRestore*>(callbacks.back().get());
    }
    if (rank0)
      callbacks.push_back(std::make_unique<ProgressBar>(stdout, ::isatty(STDOUT_FILENO) == 1 && !launched_by_mpi()));
    if (rank0 && !a.csv_log.empty())
      callbacks.push_back(std::make_unique<CSVLogger>(a.csv_log, validation.count > 0));
    if (!a.reduce_lr_on_plateau.empty())
      callbacks.push_back(std::make_unique<ReduceLROnPlateau>(plateau.first, plateau.second, rank0));
    if (!a.save_best.empty())
      callbacks.push_back(std::make_unique<ModelCheckpoint>(
          model, data.class_names, monitor, output.empty() ? "" : (fs::path(output) / "best_model").string(), rank0));
    if (a.early_stopping > 0) callbacks.push_back(std::make_unique<EarlyStopping>(monitor, a.early_stopping, rank0));
    std::vector<Callback*> callback_list;
    for (auto& callback : callbacks) callback_list.push_back(callback.get());
    try {
      trainer.fit(train, validation.count ? &validation : nullptr, callback_list);
    } catch (const Error& e) {
      // Every rank stops on the same non-finite loss: rank 0 commits the checkpoint in flight before
      // any rank ends the job.
      if (e.kind() == ErrorKind::Numeric && backup) backup->settle();
      throw;
    }
    const std::vector<EpochLog>& logs = trainer.history();
    EvalResult test = trainer.evaluate(data.test);
    if (rank0) std::printf("test_loss: %.4f - test_accuracy: %.4f\n", test.loss, test.accuracy);

    double train_seconds = 0;
    int64_t train_samples = 0;
    for (const auto& l : logs) {
      train_seconds += l.seconds;
      train_samples += l.samples;
    }
    const double samples_per_second = train_seconds > 0 ? double(train_samples) / train_seconds : 0;
    if (output.empty() || !rank0) return 0;

    json metadata{{"tandem_version", TANDEM_VERSION},
                  {"created", iso_time_now()},
                  {"epochs", a.epochs},
                  {"batch_size", a.batch_size},
                  {"optimizer", {{"name", opt.name}, {"lr", opt.lr}, {"momentum", opt.momentum}, {"nesterov", opt.nesterov}}},
                  {"seed", a.seed},
                  {"one_hot", a.one_hot},
                  {"strategy", a.strategy},
                  {"replicas", trainer.replicas_total()},
                  {"batch_invariant", a.batch_invariant},
                  {"test_loss", test.loss},
                  {"test_accuracy", test.accuracy}};
    ModelVersion version;
    version.model_json = model_json(model, data.class_names, metadata);
    version.tensors = model.to_tensors(trainer.weights());
    const std::string model_dir = (fs::path(output) / "model").string();
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
    write_file_atomic((fs::path(output) / "history.json").string(), history.dump(2) + "\n");
    json metrics{{"test_loss", test.loss},
                 {"test_accuracy", test.accuracy},
                 {"epochs", logs.size()},
                 {"samples_per_second", samples_per_second},
                 {"train_seconds", train_seconds},
                 {"batch_size", a.batch_size},
                 {"model", model.name()},
                 {"strategy", a.strategy},
                 {"replicas", trainer.replicas_total()},
                 {"batch_invariant", a.batch_invariant},
                 {"model_version_dir", version_dir}};
    if (backup && backup->writes()) {  // waited for by its on_train_end
      metrics["checkpoints_written"] = backup->written();
      metrics["checkpoint_blocking_seconds"] = backup->blocking_seconds();  // on the training thread
      metrics["checkpoint_write_seconds"] = backup->write_seconds();      // in the background
    }
    write_file_atomic((fs::path(output) / "metrics.json").string(), metrics.dump(2) + "\n");
    std::printf("saved model version %s\n", version_dir.c_str());
    return 0;
  };
  return cmd;
}

}  // namespace tandem::cli

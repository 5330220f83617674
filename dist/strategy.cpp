#include "dist/strategy.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>
#include <utility>

#include "dist/host_gradient_sync.h"
#include "dist/launch_env.h"
#include "dist/nccl_gradient_sync.h"
#include "dist/rank_agreement.h"
#include "engine/errors.h"
#include "kernels/backends.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tandem {

namespace {

// A backend for one replica, with the requested GPU precision.
std::unique_ptr<Backend> make_replica_backend(const Device& d, int threads, const std::string& precision) {
  std::unique_ptr<Backend> b = make_backend(d, threads);
#ifdef TANDEM_HAVE_CUDA
  if (d.kind == DeviceKind::Gpu) cuda_set_precision(*b, parse_gpu_precision(precision));
#endif
  return b;
}

// Everything that can be checked without placing a replica.
void validate(const StrategySpec& s) {
  const std::string& n = s.name;
  if (n == "tpu" || n == "tpu-strategy")
    throw_invalid("--strategy tpu: TPUs are not supported by Tandem",
                  "use mirrored (GPUs in one process) or multi-worker (mpirun)");
  if (n != "default" && n != "one-device" && n != "mirrored" && n != "central-storage" && n != "multi-worker")
    throw_invalid("unknown strategy '" + n + "'", "use default, mirrored, central-storage or multi-worker");
  if (s.threads < 0 || s.threads > 1024) throw_invalid("--threads must be between 1 and 1024");
  if (s.precision != "fp32" && s.precision != "tf32")
    throw_invalid("--precision must be fp32 or tf32, got '" + s.precision + "'");
  if (!(s.bucket_mb > 0 && s.bucket_mb <= 4096)) throw_invalid("--bucket-mb must be in (0, 4096]");
  if (!(s.collective_timeout > 0)) throw_invalid("--collective-timeout must be positive (seconds)");
  if (s.communicator != "auto" && s.communicator != "nccl" && s.communicator != "mpi" && s.communicator != "gloo")
    throw_invalid("--communicator must be auto, nccl, mpi or gloo, got '" + s.communicator + "'");
  if (s.communicator == "nccl" && !nccl_available())
    throw_invalid("--communicator nccl: this build of Tandem has no NCCL support",
                  "build with CUDA and NCCL, or use --communicator mpi");
  if (s.communicator == "nccl" && s.batch_invariant > 0)
    throw_invalid("--batch-invariant cannot use --communicator nccl: NCCL does not fix the order of its sums",
                  "use --communicator auto (MPI's or Gloo's host collectives), or drop --batch-invariant");
  if (n == "multi-worker" && !s.devices.empty())
    throw_invalid("--devices is for mirrored and central-storage",
                  "multi-worker uses one device per rank: --device cpu or --device gpu");
  if ((n == "mirrored" || n == "central-storage") && s.devices.empty())
    throw_invalid("--strategy " + n + " needs --devices", "e.g. --devices gpu:0,gpu:1 or --devices cpu:0,cpu:1");
  if ((n == "default" || n == "one-device") && !s.devices.empty())
    throw_invalid("--devices needs --strategy mirrored or central-storage");
}

}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

std::vector<Device> parse_devices(const std::string& list) {
  std::vector<Device> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw_invalid("--devices '" + list + "' has an empty entry", "write e.g. gpu:0,gpu:1");
    const Device d = Device::parse(item);
    for (const auto& e : out)
      if (e == d) throw_invalid("--devices lists " + d.str() + " twice", "each replica needs its own device");
    out.push_back(d);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Strategy::Strategy(StrategySpec spec) : spec_(std::move(spec)) {}
Strategy::~Strategy() = default;

std::unique_ptr<Strategy> make_strategy(const StrategySpec& spec) {
  validate(spec);
  std::unique_ptr<Strategy> s(new Strategy(spec));
  std::vector<Device> devices;
  int threads_each = 0;
  if (spec.name == "multi-worker") {
    // mpirun/srun when they started this process; else TF_CONFIG or torchrun's variables (Gloo).
    std::string note;
    std::optional<LaunchEnv> launch;
    if (!launched_by_mpi())
      launch = launch_env_from_environment(&note);
    else if (std::getenv("TF_CONFIG") || torchrun_env_present([](const char* v) { return std::getenv(v); }))
      note = "started by an MPI launcher: its ranks are used, and TF_CONFIG / torchrun's variables are ignored";
    const std::string launcher = launch ? launch->source : "MPI";
    if (launch && spec.communicator == "mpi")
      throw_invalid("--communicator mpi needs an MPI launcher (mpirun, srun); this job was launched by " + launcher,
                    "use --communicator gloo or auto");
    if (!launch && spec.communicator == "gloo")
      throw_invalid("--communicator gloo is for jobs launched by TF_CONFIG or torchrun's variables; this one by MPI",
                    "use --communicator mpi or auto");
    s->comm_ = launch ? make_gloo_communicator(*launch, spec.collective_timeout) : make_mpi_communicator(true);
    if (s->comm_->rank() == 0) {
      if (!note.empty()) std::printf("multi-worker: %s\n", note.c_str());
      if (launch) std::printf("multi-worker: launched by %s, rendezvous at %s:%d\n", launcher.c_str(),
                              launch->rendezvous_host.c_str(), launch->rendezvous_port);
    }
    Device d = Device::parse(spec.device);
    if (d.kind == DeviceKind::Gpu) d.index = s->comm_->local_rank();  // one GPU per local rank
    devices.push_back(d);
    threads_each = spec.threads ? spec.threads : std::max(1, hardware_threads() / s->comm_->local_size());
  } else {
    devices = spec.devices.empty() ? std::vector<Device>{Device::parse(spec.device)} : parse_devices(spec.devices);
    threads_each = std::max(1, (spec.threads ? spec.threads : hardware_threads()) / static_cast<int>(devices.size()));
  }
  s->gpu_ = std::all_of(devices.begin(), devices.end(), [](const Device& d) { return d.kind == DeviceKind::Gpu; });
  if (spec.precision == "tf32" && !s->gpu_)
    throw_invalid("--precision tf32 applies to GPUs only", "drop --precision, or use --device gpu:N");
  if (spec.communicator == "nccl" && !s->gpu_) throw_invalid("--communicator nccl needs GPU replicas", "use --device gpu");
  for (const auto& d : devices) s->backends_.push_back(make_replica_backend(d, threads_each, spec.precision));
  for (auto& b : s->backends_) s->backend_ptrs_.push_back(b.get());
  if (s->central_storage()) s->host_ = make_cpu_backend(1);
  // NCCL where the replicas are GPUs and it is built in; MPI (host buffers) otherwise, and for
  // batch invariance (its tree all-reduce). Mirrored CPU replicas and central storage sum on the host.
  const bool nccl = s->gpu_ && nccl_available() && spec.communicator != "mpi" && spec.communicator != "gloo" &&
                    spec.batch_invariant == 0;
  if (s->comm_)
    s->collectives_ = nccl ? "nccl" : s->comm_->name() == "gloo" ? "gloo" : "mpi";
  else
    s->collectives_ = nccl && devices.size() > 1 && !s->central_storage() ? "nccl" : "host";
  return s;
}

void Strategy::connect(const Model& model, nlohmann::json config, const std::vector<InputDigest>& inputs) {
  const size_t bucket_bytes = static_cast<size_t>(spec_.bucket_mb * 1048576.0);
  if (comm_) {
    // Ranks agree on the run's identity, and on how this job runs it, before any training collective.
    config["strategy"] = spec_.name;
    config["bucket_mb"] = spec_.bucket_mb;
    config["ranks"] = comm_->size();
    config["collectives"] = collectives_;
    std::string keys;
    for (auto it = config.begin(); it != config.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
    comm_->start_watchdog(spec_.collective_timeout);
    require_same_inputs(*comm_, inputs);
    require_same_on_all_ranks(*comm_, "the run configuration (" + keys + ")", config.dump());
    if (collectives_ == "nccl") {
      sync_ = make_nccl_gradient_sync(*comm_, model, *backends_[0], bucket_bytes, spec_.overlap,
                                      spec_.collective_timeout);
    } else {
      auto bucketed = std::make_unique<HostGradientSync>(*comm_, model, bucket_bytes, spec_.overlap,
                                                          spec_.collective_timeout);
      bucketed->set_tree(spec_.batch_invariant > 0);
      sync_ = std::move(bucketed);
    }
    if (comm_->rank() == 0)
      std::printf("multi-worker: %d ranks (%s gradients, %s%s), %d per node, %zu gradient buckets\n", comm_->size(),
                  collectives_.c_str(), comm_->name().c_str(), spec_.batch_invariant > 0 ? ", tree all-reduce" : "",
                  comm_->local_size(), plan_buckets(model, bucket_bytes).size());
  } else if (backends_.size() > 1) {
    // GPU replicas are on distinct GPUs (parse_devices refuses a device listed twice).
    if (collectives_ == "nccl") local_reduce_ = make_nccl_local_reduce(backend_ptrs_);
    std::printf("%s: %zu replicas (%s), gradients %s\n", spec_.name.c_str(), backends_.size(), spec_.devices.c_str(),
                collectives_ == "nccl" ? "nccl all-reduce" : "summed on the host");
  }
}

}  // namespace tandem

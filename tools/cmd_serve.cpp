// `tandem serve`: a drop-in for `tensorflow_model_server` over Tandem's version trees. Takes TF
// Serving's flag spellings (underscores) and kebab-case aliases; the server itself is serve/.
#include "engine/errors.h"
#include "serve/batching.h"
#include "serve/server.h"
#include "tools/cli.h"

namespace tandem::cli {

namespace {

// "--rest_api_port" and "--rest-api-port".
std::string both(const std::string& underscored) {
  std::string kebab = underscored;
  for (char& c : kebab)
    if (c == '_') c = '-';
  return "--" + underscored + (kebab == underscored ? "" : ",--" + kebab);
}

}  // namespace

Command add_serve(CLI::App& root) {
  auto o = std::make_shared<serve::ServerOptions>();
  o->servable.threads = 0;  // unset: --tensorflow_intra_op_parallelism, else all cores
  auto enable_batching = std::make_shared<bool>(false);
  auto batching_file = std::make_shared<std::string>();
  auto per_model_batching = std::make_shared<bool>(false);
  auto ssl_file = std::make_shared<std::string>();
  auto warmup = std::make_shared<bool>(true);
  auto load_retries = std::make_shared<int>(5);
  auto intra_op = std::make_shared<int>(0);
  CLI::App* c = root.add_subcommand(
      "serve", "Serve model versions over TensorFlow Serving's REST and gRPC APIs (and KServe v2), with hot swap");
  c->add_option(both("port"), o->grpc_port, "gRPC port (0 turns gRPC off)")->capture_default_str();
  c->add_option(both("rest_api_port"), o->rest_port, "REST port (0 turns REST off)")->capture_default_str();
  c->add_option(both("host"), o->host, "address to listen on")->capture_default_str();
  c->add_option(both("model_name"), o->model_name, "name of the model served from --model_base_path")
      ->capture_default_str();
  c->add_option(both("model_base_path"), o->model_base_path, "directory holding the model's version directories");
  c->add_option(both("model_config_file"), o->model_config_file,
                "text-format ModelServerConfig naming several models, policies and labels");
  c->add_option(both("model_config_file_poll_wait_seconds"), o->model_config_file_poll_seconds,
                "re-read the config file this often (0: read once)")
      ->capture_default_str();
  c->add_option(both("file_system_poll_wait_seconds"), o->file_system_poll_seconds,
                "look for new versions this often (0: only at start)")
      ->capture_default_str();
  c->add_option(both("monitoring_config_file"), o->monitoring_config_file,
                "text-format MonitoringConfig (prometheus_config { enable: true })");
  c->add_option(both("rest_api_timeout_in_ms"), o->rest_timeout_ms,
                "a REST request not computed by then gets 504")
      ->capture_default_str();
  c->add_flag(both("allow_version_labels_for_unavailable_models"), o->allow_labels_for_unavailable,
              "allow labels on versions that are not loaded yet");
  c->add_flag(both("rest_api_enable_cors_support"), o->cors, "answer with CORS headers");
  c->add_option(both("rest_api_num_threads"), o->rest_threads,
                "REST workers (each open keep-alive connection holds one)")
      ->capture_default_str();
  c->add_option(both("grpc_max_threads"), o->grpc_max_threads, "gRPC threads (0: grpc++'s default)");
  c->add_option(both("rest_api_max_body_bytes"), o->rest_max_body_bytes, "largest REST request body (413 above)")
      ->capture_default_str();
  c->add_option(both("grpc_max_message_bytes"), o->grpc_max_message_bytes,
                "largest gRPC message (RESOURCE_EXHAUSTED above)")
      ->capture_default_str();
  c->add_option(both("max_rows_per_request"), o->max_rows_per_request, "most rows one request may carry")
      ->capture_default_str();
  c->add_option(both("max_rows_per_forward"), o->servable.max_batch,
                "rows per forward pass (activations are planned for this; larger requests run in chunks)")
      ->capture_default_str();
  c->add_option(both("drain_timeout_seconds"), o->drain_seconds,
                "on SIGTERM, how long requests in flight may take before they are cancelled")
      ->capture_default_str();
  c->add_option(both("device"), o->servable.device, "cpu or gpu:N")->capture_default_str();
  c->add_option(both("threads"), o->servable.threads, "CPU compute threads per version (default: all cores)");
  auto replicas = std::make_shared<int>(0);
  c->add_option(both("replicas"), *replicas,
                "forward passes of one version that may run at once, each on --threads / N threads (default: one "
                "per compute thread; with --enable_batching: num_batch_threads)");
  // TF Serving flags that a launch line may carry.
  c->add_flag(both("enable_batching"), *enable_batching,
              "dynamic batching: requests that arrive close together run as one forward pass");
  c->add_option(both("batching_parameters_file"), *batching_file,
                "text-format BatchingParameters (max_batch_size, batch_timeout_micros, ...; TF Serving's defaults)");
  c->add_flag(both("enable_per_model_batching_params"), *per_model_batching,
              "a version directory's batching_params.pbtxt replaces --batching_parameters_file for that version");
  c->add_option(both("enable_model_warmup"), *warmup, "accepted for compatibility: versions are always warmed up");
  c->add_option(both("max_num_load_retries"), *load_retries,
                "accepted for compatibility: a failed version is retried when its directory changes");
  c->add_option(both("tensorflow_intra_op_parallelism"), *intra_op, "as --threads");
  c->add_option(both("ssl_config_file"), *ssl_file, "TLS (not supported)");
  return Command{c, [=]() -> int {
                   if (!batching_file->empty() && !*enable_batching)
                     throw_invalid("--batching_parameters_file needs --enable_batching");
                   if (*per_model_batching && !*enable_batching)
                     throw_invalid("--enable_per_model_batching_params needs --enable_batching");
                   if (!ssl_file->empty())
                     throw_invalid("--ssl_config_file: TLS is not supported", "terminate TLS in a proxy in front of the server");
                   serve::ServerOptions opts = *o;
                   if (opts.servable.threads <= 0) opts.servable.threads = *intra_op > 0 ? *intra_op : default_threads();
                   // One single-threaded forward pass per core: 1.3-4.2x the requests/s of one pass on
                   // all cores, for both models at every concurrency (benchmarks/serve/serve_bench.py;
                   // RESULTS.md, "Serving").
                   opts.servable.replicas = *replicas != 0 ? *replicas : opts.servable.threads;
                   if (*enable_batching) {
                     opts.servable.batching = true;
                     opts.servable.per_model_batching = *per_model_batching;
                     opts.servable.cores = default_threads();
                     if (batching_file->empty()) {
                       opts.servable.batch.num_batch_threads = default_threads();  // TF Serving's default
                     } else {
                       opts.servable.batch = serve::read_batching_parameters_file(*batching_file, default_threads());
                     }
                   }
                   return serve::run_server(opts);
                 }};
}

}  // namespace tandem::cli

// serve/: `tandem serve`, a TensorFlow Serving–compatible model server. The map:
//   model_manager  defines: polling sources, version policies, labels, availability-preserving swaps
//   servable       defines: one loaded version (model, weights, planned replica) behind a handle
//   predictor      defines: the request type every front end decodes into, and its answer
//   rest_api       defines: TF Serving REST v1, KServe v2 and the Prometheus page, as pure functions
//   http_server    defines: the HTTP transport (cpp-httplib)
//   grpc_api       defines: PredictionService, ModelService and health on grpc++
//   config         defines: text-format ModelServerConfig and MonitoringConfig files
//   metrics        defines: Prometheus metrics under TF Serving's names
//   server         defines: the process: wiring, config-file polling, SIGTERM drain
#pragma once
#include <string>

#include "serve/servable.h"

namespace tandem::serve {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int grpc_port = 8500;  // 0: off
  int rest_port = 8501;  // 0: off
  std::string model_name = "default", model_base_path, model_config_file;
  double model_config_file_poll_seconds = 0;  // 0: read once
  double file_system_poll_seconds = 1;        // 0: only at start
  std::string monitoring_config_file;
  int rest_timeout_ms = 30000;
  bool allow_labels_for_unavailable = false;
  bool cors = false;
  int rest_threads = 64;
  int grpc_max_threads = 0;
  int64_t rest_max_body_bytes = int64_t{64} << 20;
  int grpc_max_message_bytes = 64 << 20;
  int64_t max_rows_per_request = 10000;
  int max_json_depth = 64;
  double drain_seconds = 30;
  ServableOptions servable;  // .batching and .batch: --enable_batching, --batching_parameters_file
};

// Runs the server until SIGTERM or SIGINT, then drains and returns 0. Throws tandem::Error for
// bad flags or files (exit 2) and for ports that cannot be bound.
int run_server(const ServerOptions& options);

}  // namespace tandem::serve

#include "serve/server.h"

#include <signal.h>
#include <sys/resource.h>

#include <thread>

#include "engine/errors.h"
#include "serve/config.h"
#include "serve/grpc_api.h"
#include "serve/http_server.h"
#include "serve/log.h"
#include "serve/metrics.h"
#include "serve/model_manager.h"
#include "serve/periodic.h"
#include "serve/predictor.h"
#include "serve/rest_api.h"

namespace tandem::serve {
namespace {

ServerConfig initial_config(const ServerOptions& o) {
  if (!o.model_config_file.empty()) {
    if (!o.model_base_path.empty())
      throw_invalid("--model_config_file and --model_base_path cannot both be given",
                    "name the models either in the config file or with --model_name/--model_base_path");
    return read_model_config_file(o.model_config_file);
  }
  if (o.model_base_path.empty())
    throw_invalid("no model to serve", "pass --model_base_path DIR (with --model_name) or --model_config_file FILE");
  ServerConfig c{ModelSource{o.model_name, o.model_base_path, {}, {}}};
  try {
    validate_config(c);
  } catch (const RequestError& e) {
    throw_invalid(e.what());
  }
  return c;
}

// Re-reads --model_config_file every `seconds`; a changed file is applied, a bad one is logged
// once and the config in force stays.
class ConfigFilePoller {
 public:
  ConfigFilePoller(std::string path, double seconds, ModelManager& manager) : path_(std::move(path)) {
    try {
      last_text_ = read_config_text(path_);
    } catch (const Error&) {
    }
    thread_ = std::make_unique<PeriodicThread>(seconds, [this, &manager] { check(manager); });
  }

 private:
  void check(ModelManager& manager) {
    std::string text;
    try {
      text = read_config_text(path_);
    } catch (const Error& e) {
      if (last_error_ != e.what()) log_error(std::string("config file: ") + e.what() + " (the config in force stays)");
      last_error_ = e.what();
      return;
    }
    if (text == last_text_) return;
    try {
      const ServerConfig config = read_model_config_file(path_);
      const Status s = manager.reload(config);
      if (!s.ok()) fail(s.code, s.message);
      log_info("config file " + path_ + " changed: applied");
      last_text_ = text;
      last_error_.clear();
    } catch (const std::exception& e) {
      if (last_error_ != e.what())
        log_error("config file " + path_ + " changed but was not applied (the config in force stays): " + e.what());
      last_error_ = e.what();
      last_text_ = text;  // looked at again when it changes
    }
  }
  std::string path_, last_text_, last_error_;
  std::unique_ptr<PeriodicThread> thread_;  // last: stopped before the strings it uses go
};

}  // namespace

int run_server(const ServerOptions& o) {
  // Signals are taken by sigwait below; every thread started from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Every client connection is a file descriptor, idle ones included: take the hard limit (the soft
  // default is often 1,024) as servers such as nginx do.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  if (o.max_rows_per_request < 1) throw_invalid("--max_rows_per_request must be at least 1");
  if (o.servable.max_batch < 1) throw_invalid("--max_rows_per_forward must be at least 1");
  if (o.servable.replicas < 1 || o.servable.replicas > 256) throw_invalid("--replicas must be between 1 and 256");
  if (o.rest_timeout_ms < 1) throw_invalid("--rest_api_timeout_in_ms must be positive");
  if (o.rest_threads < 1) throw_invalid("--rest_api_num_threads must be at least 1");
  if (o.grpc_port < 0 || o.grpc_port > 65535 || o.rest_port < 0 || o.rest_port > 65535)
    throw_invalid("ports are 0..65535 (0 turns a front end off)");
  if (o.grpc_port == 0 && o.rest_port == 0) throw_invalid("--port and --rest_api_port are both 0: nothing to serve on");
  if (o.grpc_port != 0 && o.grpc_port == o.rest_port)
    throw_invalid("--port and --rest_api_port are both " + std::to_string(o.grpc_port), "give them different ports");

  const ServerConfig config = initial_config(o);
  MonitoringOptions monitoring;
  if (!o.monitoring_config_file.empty()) monitoring = read_monitoring_config_file(o.monitoring_config_file);

  ServerMetrics metrics;
  ManagerOptions mo;
  mo.servable = o.servable;
  if (mo.servable.batching) {
    mo.servable.batch.validate();
    mo.servable.on_batch = [&metrics](const std::string& model, int64_t version, const BatchStats& st) {
      metrics.batch(model, version, st.rows, st.padded_rows, st.queue_micros, st.compute_micros);
    };
    const BatchingOptions& b = mo.servable.batch;
    log_info("batching: max_batch_size " + std::to_string(b.max_batch_size) + ", batch_timeout_micros " +
             std::to_string(b.batch_timeout_micros) + ", max_enqueued_batches " +
             std::to_string(b.max_enqueued_batches) + ", num_batch_threads " + std::to_string(b.num_batch_threads) +
             (b.allowed_batch_sizes.empty() ? "" : ", allowed_batch_sizes given"));
  }
  mo.allow_labels_for_unavailable = o.allow_labels_for_unavailable;
  ModelManager manager(mo, [&metrics](const std::string& model, int64_t version, const char* event, bool ok,
                                      double seconds) {
    if (std::string(event) == "load")
      metrics.load(model, version, ok, seconds);
    else
      metrics.unload(model, version);
  });
  const Status loaded = manager.reload(config);
  if (!loaded.ok()) throw_invalid(loaded.message);
  if (const std::string problem = manager.startup_problem(); !problem.empty())
    throw_data(problem, "fix or remove the version directories named above; 'tandem inspect DIR' shows what is wrong");

  Predictor predictor(manager, &metrics, Limits{o.max_rows_per_request});
  RestOptions ro;
  ro.timeout_ms = o.rest_timeout_ms;
  ro.max_json_depth = o.max_json_depth;
  ro.cors = o.cors;
  ro.monitoring = monitoring;
  RestHandler rest(manager, predictor, &metrics, ro);

  std::unique_ptr<GrpcServer> grpc;
  if (o.grpc_port) {
    grpc = std::make_unique<GrpcServer>(
        GrpcOptions{o.host + ":" + std::to_string(o.grpc_port), o.grpc_max_message_bytes, o.grpc_max_threads}, manager,
        predictor, &metrics);
    grpc->start();
    log_info("gRPC API on " + o.host + ":" + std::to_string(o.grpc_port));
  }
  std::unique_ptr<HttpServer> http;
  if (o.rest_port) {
    HttpOptions ho;
    ho.host = o.host;
    ho.port = o.rest_port;
    ho.threads = o.rest_threads;
    ho.max_body_bytes = static_cast<size_t>(o.rest_max_body_bytes);
    http = std::make_unique<HttpServer>(ho, rest);
    http->start();
    log_info("REST API on " + o.host + ":" + std::to_string(o.rest_port) +
             (monitoring.prometheus ? " (Prometheus metrics at " + monitoring.path + ")" : ""));
  }
  if (o.file_system_poll_seconds > 0) manager.start_polling(o.file_system_poll_seconds);
  std::unique_ptr<ConfigFilePoller> config_poller;
  if (!o.model_config_file.empty() && o.model_config_file_poll_seconds > 0)
    config_poller = std::make_unique<ConfigFilePoller>(o.model_config_file, o.model_config_file_poll_seconds, manager);
  if (grpc) grpc->set_serving(true);
  log_info("serving");

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  log_info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
           ": no new connections; answering the requests already accepted (drain up to " +
           std::to_string(static_cast<int>(o.drain_seconds)) + " s)");
  config_poller.reset();
  manager.stop_polling();
  if (grpc) grpc->set_serving(false);
  // Both front ends drain at once.
  std::thread rest_drain([&] {
    if (http) http->stop();
  });
  if (grpc) grpc->shutdown(o.drain_seconds);
  rest_drain.join();
  log_info("stopped");
  return 0;
}

}  // namespace tandem::serve

#include "serve/grpc_api.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstring>

#include "engine/errors.h"
#include "serve/config.h"
#include "serve/log.h"
#include "serve/metrics.h"
#include "serve/proto_convert.h"
#include "serve/status.h"
#include "tensorflow_serving/apis/model_service.grpc.pb.h"
#include "tensorflow_serving/apis/prediction_service.grpc.pb.h"

namespace tandem::serve {
namespace tfs = tensorflow::serving;

void decode_tensor_proto(const tensorflow::TensorProto& t, const std::string& name, PredictCall& call) {
  if (t.dtype() != tensorflow::DT_FLOAT)
    fail(Code::INVALID_ARGUMENT, "Expects arg[0] (" + name + ") to be float but " +
                                     tensorflow::DataType_Name(t.dtype()) + " is provided");
  if (t.tensor_shape().unknown_rank())
    fail(Code::INVALID_ARGUMENT, "input '" + name + "' has an unknown rank; give its shape");
  call.input_name = name;
  call.shape.clear();
  for (const auto& d : t.tensor_shape().dim()) call.shape.push_back(d.size());
  const int64_t n = checked_elements(call.shape, "input '" + name + "'");
  if (!t.tensor_content().empty()) {
    if (static_cast<int64_t>(t.tensor_content().size()) != n * 4)
      fail(Code::INVALID_ARGUMENT, "input '" + name + "': tensor_content has " +
                                       std::to_string(t.tensor_content().size()) + " bytes, but float32 of shape " +
                                       shape_str(call.shape) + " needs " + std::to_string(n * 4));
    call.set_input_bytes(t.tensor_content().data(), static_cast<size_t>(n));
    return;
  }
  const int64_t given = t.float_val_size();
  if (given > n || (given == 0 && n > 0))
    fail(Code::INVALID_ARGUMENT, "input '" + name + "' has " + std::to_string(given) + " float_val values for shape " +
                                     shape_str(call.shape) + " (" + std::to_string(n) + " elements)");
  // TF's splat (fewer values than elements repeat the last) must not turn a few bytes into
  // gigabytes: no Tandem model takes a request anywhere near this large.
  constexpr int64_t kMaxSplatElements = int64_t(1) << 24;
  if (given < n && n > kMaxSplatElements)
    fail(Code::INVALID_ARGUMENT, "input '" + name + "': " + std::to_string(given) + " float_val values would be " +
                                     "repeated to " + std::to_string(n) + " elements for shape " +
                                     shape_str(call.shape) + " (at most " + std::to_string(kMaxSplatElements) +
                                     "); send every value, or tensor_content");
  call.borrowed = nullptr;
  call.values.assign(t.float_val().begin(), t.float_val().end());
  if (given > 0) call.values.resize(static_cast<size_t>(n), t.float_val(static_cast<int>(given - 1)));
}

namespace {

grpc::Status to_grpc(const Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code)), s.message);
}

ModelRef ref_of(const tfs::ModelSpec& spec) {
  ModelRef r;
  r.name = spec.name();
  if (spec.has_version()) {
    if (spec.version().value() < 1)
      fail(Code::INVALID_ARGUMENT, "model_spec.version must be a positive integer, got " +
                                       std::to_string(spec.version().value()));
    r.version = spec.version().value();
  }
  if (spec.version_choice_case() == tfs::ModelSpec::kVersionLabel) r.label = spec.version_label();
  r.signature = spec.signature_name();
  return r;
}

void fill_spec(const Servable& s, tfs::ModelSpec* spec, const std::string& signature) {
  spec->set_name(s.name());
  spec->mutable_version()->set_value(s.version());
  spec->set_signature_name(signature);
}

Clock::time_point steady_deadline(const grpc::ServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return Clock::time_point::max();
  const auto left = d - std::chrono::system_clock::now();
  if (left > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

}  // namespace

PredictCall predict_call_of(const tfs::PredictRequest& req) {
  PredictCall call;
  call.model = ref_of(req.model_spec());
  if (req.inputs_size() != 1)
    fail(Code::INVALID_ARGUMENT,
         "expected 1 input (" + std::string(kInputName) + "), got " + std::to_string(req.inputs_size()));
  for (const std::string& f : req.output_filter())
    if (f != kOutputName)
      fail(Code::INVALID_ARGUMENT, "output tensor alias not found in signature: " + f + " Outputs expected to be in the set {" +
                                       kOutputName + "}.");
  const auto& [name, tensor] = *req.inputs().begin();
  decode_tensor_proto(tensor, name, call);
  return call;
}

void fill_predict_response(const PredictResult& r, tfs::PredictResponse* resp) {
  fill_spec(*r.servable, resp->mutable_model_spec(), kDefaultSignature);
  tensorflow::TensorProto& out = (*resp->mutable_outputs())[kOutputName];
  out.set_dtype(tensorflow::DT_FLOAT);
  out.mutable_tensor_shape()->add_dim()->set_size(r.rows);
  out.mutable_tensor_shape()->add_dim()->set_size(r.classes);
  out.mutable_float_val()->Add(r.probabilities.begin(), r.probabilities.end());
}

namespace {

class PredictionServiceImpl final : public tfs::PredictionService::Service {
 public:
  PredictionServiceImpl(const Predictor& p, ServerMetrics* m) : predictor_(p), metrics_(m) {}

  grpc::Status Predict(grpc::ServerContext* ctx, const tfs::PredictRequest* req, tfs::PredictResponse* resp) override {
    const auto arrival = Clock::now();
    std::string version;
    Status status;
    try {
      PredictCall call = predict_call_of(*req);
      call.deadline = steady_deadline(ctx);
      const PredictResult r = predictor_.predict(call);
      version = std::to_string(r.servable->version());
      fill_predict_response(r, resp);
    } catch (...) {
      status = current_exception_status();
    }
    if (metrics_)
      metrics_->request(req->model_spec().name(), version, "predict", "GRPC", code_name(status.code),
                        std::chrono::duration<double, std::micro>(Clock::now() - arrival).count());
    return to_grpc(status);
  }

  grpc::Status GetModelMetadata(grpc::ServerContext*, const tfs::GetModelMetadataRequest* req,
                                tfs::GetModelMetadataResponse* resp) override {
    try {
      if (req->metadata_field_size() == 0)
        fail(Code::INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field");
      for (const std::string& f : req->metadata_field())
        if (f != "signature_def") fail(Code::INVALID_ARGUMENT, "Metadata field " + f + " is not supported");
      ServableHandle h = predictor_.resolve(ref_of(req->model_spec()));
      fill_spec(*h, resp->mutable_model_spec(), "");
      (*resp->mutable_metadata())["signature_def"].PackFrom(signature_def_map(*h));
      return grpc::Status::OK;
    } catch (...) {
      return to_grpc(current_exception_status());
    }
  }

 private:
  const Predictor& predictor_;
  ServerMetrics* metrics_;
};

class ModelServiceImpl final : public tfs::ModelService::Service {
 public:
  explicit ModelServiceImpl(ModelManager& m) : manager_(m) {}

  grpc::Status GetModelStatus(grpc::ServerContext*, const tfs::GetModelStatusRequest* req,
                              tfs::GetModelStatusResponse* resp) override {
    try {
      const ModelRef ref = ref_of(req->model_spec());
      *resp = status_response(manager_.status(ref.name, ref.version));
      return grpc::Status::OK;
    } catch (...) {
      return to_grpc(current_exception_status());
    }
  }

  grpc::Status HandleReloadConfigRequest(grpc::ServerContext*, const tfs::ReloadConfigRequest* req,
                                         tfs::ReloadConfigResponse* resp) override {
    Status s;
    try {
      s = manager_.reload(config_from_proto(req->config()));
    } catch (...) {
      s = current_exception_status();
    }
    if (s.ok()) {
      log_reload("applied a config from HandleReloadConfigRequest");
    } else {
      log_reload("rejected a config from HandleReloadConfigRequest (the previous config stays): " + s.message);
    }
    resp->mutable_status()->set_error_code(static_cast<tensorflow::error::Code>(static_cast<int>(s.code)));
    resp->mutable_status()->set_error_message(s.message);
    return to_grpc(s);
  }

 private:
  static void log_reload(const std::string& line) { log_info(line); }
  ModelManager& manager_;
};

}  // namespace

struct GrpcServer::Impl {
  GrpcOptions options;
  PredictionServiceImpl prediction;
  ModelServiceImpl model;
  std::unique_ptr<grpc::Server> server;
  Impl(GrpcOptions o, ModelManager& m, const Predictor& p, ServerMetrics* metrics)
      : options(std::move(o)), prediction(p, metrics), model(m) {}
};

GrpcServer::GrpcServer(GrpcOptions options, ModelManager& manager, const Predictor& predictor, ServerMetrics* metrics)
    : impl_(std::make_unique<Impl>(std::move(options), manager, predictor, metrics)) {}

GrpcServer::~GrpcServer() {
  if (impl_->server) impl_->server->Shutdown(std::chrono::system_clock::now());
}

void GrpcServer::start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(impl_->options.address, grpc::InsecureServerCredentials(), &bound_port);
  builder.SetMaxReceiveMessageSize(impl_->options.max_message_bytes);
  builder.SetMaxSendMessageSize(impl_->options.max_message_bytes);
  // grpc++ binds with SO_REUSEPORT by default: a second server on the same port would start
  // without an error and take half of the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (impl_->options.max_threads > 0) {
    grpc::ResourceQuota quota("tandem-serve");
    quota.SetMaxThreads(impl_->options.max_threads);
    builder.SetResourceQuota(quota);
  }
  builder.RegisterService(&impl_->prediction);
  builder.RegisterService(&impl_->model);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || bound_port == 0)
    throw_io("cannot listen for gRPC on " + impl_->options.address,
             "is the port in use by another server? choose another with --port");
}

void GrpcServer::set_serving(bool serving) {
  if (impl_->server && impl_->server->GetHealthCheckService())
    impl_->server->GetHealthCheckService()->SetServingStatus(serving);
}

void GrpcServer::shutdown(double drain_seconds) {
  if (!impl_->server) return;
  set_serving(false);
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(drain_seconds)));
  impl_->server->Wait();
  impl_->server.reset();
}

}  // namespace tandem::serve

// The gRPC front end: tensorflow.serving.PredictionService (Predict, GetModelMetadata),
// tensorflow.serving.ModelService (GetModelStatus, HandleReloadConfigRequest) and
// grpc.health.v1.Health, on grpc++'s synchronous server.
#pragma once
#include <memory>
#include <string>

#include "serve/model_manager.h"
#include "serve/predictor.h"

namespace tandem::serve {

class ServerMetrics;

struct GrpcOptions {
  std::string address;          // host:port
  int max_message_bytes = 64 << 20;
  int max_threads = 0;          // 0: grpc++'s default
};

class GrpcServer {
 public:
  GrpcServer(GrpcOptions options, ModelManager& manager, const Predictor& predictor, ServerMetrics* metrics);
  ~GrpcServer();
  // Binds and starts serving; throws Error(Io) if the address cannot be bound.
  void start();
  void set_serving(bool serving);  // the health service's answer
  // Stops taking new calls; waits for calls in flight up to `drain_seconds`, then cancels them.
  void shutdown(double drain_seconds);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::serve

// The Predict call's decoding and answer, without the transport (tests and fuzz targets call them).
namespace tensorflow {
class TensorProto;
namespace serving {
class PredictRequest;
class PredictResponse;
}  // namespace serving
}  // namespace tensorflow
namespace tandem::serve {
// Shape and values of a DT_FLOAT TensorProto (tensor_content or float_val, TF's semantics: a
// shorter float_val repeats its last value). Throws RequestError(INVALID_ARGUMENT).
void decode_tensor_proto(const tensorflow::TensorProto& tensor, const std::string& name, PredictCall& call);
// The call a PredictRequest asks for: its model spec, its one input (decode_tensor_proto), its
// output filter checked. Throws RequestError(INVALID_ARGUMENT) with TF Serving's messages. The call
// may read the request's tensor_content in place: `req` must outlive it.
PredictCall predict_call_of(const tensorflow::serving::PredictRequest& req);
// The PredictResponse of a result: model spec (version, serving_default) and "probabilities".
void fill_predict_response(const PredictResult& result, tensorflow::serving::PredictResponse* resp);
}  // namespace tandem::serve

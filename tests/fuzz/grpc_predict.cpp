// A gRPC PredictRequest as the server receives it: the message bytes parsed by libprotobuf (as
// grpc++ does), then predict_call_of (model spec, input tensor, output filter), the Predictor (into
// a batch on the batching server) and fill_predict_response, on a server without and with
// batching. Errors must map to a status with a message and a code other than INTERNAL; a good
// request must still be answered correctly afterwards.
#include <cstdio>
#include <cstdlib>

#include "fuzz_target.h"
#include "serve/grpc_api.h"
#include "serve/status.h"
#include "server_rig.h"
#include "tensorflow_serving/apis/predict.pb.h"

#include <google/protobuf/stubs/logging.h>

namespace {
// libprotobuf logs every string field with invalid UTF-8 it parses (grpc++ answers those
// requests INTERNAL before our code runs): millions of lines in a campaign, so they are dropped.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return true;
}();
}  // namespace

TANDEM_FUZZ_TARGET(grpc_predict) {
  tensorflow::serving::PredictRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;  // grpc++ answers INTERNAL before us
  for (const tandem::fuzz::ServerRig* rig : {&tandem::fuzz::plain_rig(), &tandem::fuzz::batching_rig()}) {
    try {
      const tandem::serve::PredictCall call = tandem::serve::predict_call_of(req);
      const tandem::serve::PredictResult r = rig->predictor->predict(call);
      tensorflow::serving::PredictResponse resp;
      tandem::serve::fill_predict_response(r, &resp);
      if (r.probabilities.size() != static_cast<size_t>(r.rows * r.classes)) std::abort();
      if (tandem::fuzz::verbose()) std::fprintf(stderr, "  accepted: %lld rows\n", static_cast<long long>(r.rows));
    } catch (...) {  // what the service answers: current_exception_status, as in grpc_api.cpp
      const tandem::serve::Status st = tandem::serve::current_exception_status();
      if (st.code == tandem::serve::Code::INTERNAL || st.message.empty()) {
        std::fprintf(stderr, "\n==fuzz== grpc_predict: %s: %s\n", tandem::serve::code_name(st.code), st.message.c_str());
        std::abort();
      }
      if (tandem::fuzz::verbose()) std::fprintf(stderr, "  rejected: %s\n", st.message.c_str());
    }
    rig->check_still_serving("a gRPC PredictRequest");
  }
  return 0;
}

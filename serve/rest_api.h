// The REST front ends, as pure request -> reply functions (no sockets: the HTTP server in
// http_server.cpp carries them, and tests call them directly):
//   TF Serving's REST API v1   GET  /v1/models/{m}[/versions/{v}|/labels/{l}][/metadata]
//                              POST /v1/models/{m}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
//   KServe's v2 protocol       GET  /v2, /v2/health/{live,ready}, /v2/models/{m}[/versions/{v}][/ready]
//                              POST /v2/models/{m}[/versions/{v}]/infer  (JSON, or with the binary
//                                   tensor extension that tritonclient uses by default)
//   Prometheus                 GET  the monitoring config's path (text exposition format)
// Errors are {"error": "..."} with TF Serving's HTTP codes.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "serve/config.h"
#include "serve/model_manager.h"
#include "serve/predictor.h"

namespace tandem::serve {

class ServerMetrics;

struct HttpRequest {
  std::string method;  // GET, POST, ...
  std::string path;    // URL-decoded, without the query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct RestOptions {
  int timeout_ms = 30000;  // --rest_api_timeout_in_ms: a request not computed by then gets 504
  int max_json_depth = 64;
  bool cors = false;  // --rest_api_enable_cors_support
  MonitoringOptions monitoring;
};

class RestHandler {
 public:
  RestHandler(ModelManager& manager, const Predictor& predictor, ServerMetrics* metrics, RestOptions options)
      : manager_(manager), predictor_(predictor), metrics_(metrics), options_(std::move(options)) {}
  HttpReply handle(const HttpRequest& request, Clock::time_point arrival) const;

 private:
  HttpReply v1(const HttpRequest& request, Clock::time_point arrival) const;
  HttpReply v2(const HttpRequest& request, Clock::time_point arrival) const;
  ModelManager& manager_;
  const Predictor& predictor_;
  ServerMetrics* metrics_;
  RestOptions options_;
};

// Pieces of the REST decoding, exposed for tests.
// Parses JSON with a nesting limit; throws RequestError(INVALID_ARGUMENT) "JSON Parse error: ...".
nlohmann::json parse_json_body(const std::string& body, int max_depth);
// A nested JSON array of numbers -> its shape and values (row-major). Throws INVALID_ARGUMENT
// naming `what` for ragged lists, non-numbers, base64 values (the input is float32).
void decode_dense(const nlohmann::json& value, const std::string& what, std::vector<int64_t>& shape,
                  std::vector<float>& values);
// The request of a :predict body ({"instances": ...} or {"inputs": ...}); sets call.shape/values/
// input_name and model.signature, and returns whether it was the row ("instances") form.
bool decode_predict_body(const nlohmann::json& body, PredictCall& call);
// The same from the body's text, straight into floats for the common forms (no JSON document);
// what the fast reader declines goes through parse_json_body + decode_predict_body.
bool decode_predict_text(const std::string& body, int max_depth, PredictCall& call);
// The fast reader alone: returns false (and leaves `call` as it was) for any body it declines.
bool scan_predict_body(const std::string& body, int max_depth, PredictCall& call, bool& rows);
// Appends a float as JSON (shortest round-trip form; NaN and Infinity as TF Serving writes them).
void append_json_float(std::string& out, float v);

}  // namespace tandem::serve

#include "serve/rest_api.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

#include "serve/metrics.h"
#include "serve/proto_convert.h"
#include "serve/status.h"

namespace tandem::serve {
using nlohmann::json;

namespace {

// A reply's JSON text. Strings from the request (a model name in the path) may hold any bytes:
// invalid UTF-8 is written as U+FFFD instead of throwing.
std::string json_text(const json& j, int indent = -1) { return j.dump(indent, ' ', false, json::error_handler_t::replace); }

HttpReply json_reply(int status, std::string body) {
  HttpReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpReply error_reply(const Status& s) {
  return json_reply(http_status(s.code), json_text(json{{"error", s.message}}));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool starts_with_icase(const std::string& s, size_t at, const char* prefix) {
  const size_t n = std::strlen(prefix);
  if (s.size() < at + n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(s[at + i])) != prefix[i]) return false;
  return true;
}

// A version in a URL: digits only, fitting int64.
bool parse_version(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 19 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

bool valid_b64(const std::string& s) {
  size_t pad = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                       c == '/' || c == '-' || c == '_';
    if (c == '=') {
      ++pad;
    } else if (!alpha || pad) {
      return false;
    }
  }
  return pad <= 2 && (s.size() % 4 == 0 || pad == 0);
}

void decode_into(const json& v, const std::string& what, size_t depth, std::vector<int64_t>& shape, bool& shape_known,
                 std::vector<float>& values) {
  if (v.is_array()) {
    if (!shape_known) {
      shape.push_back(static_cast<int64_t>(v.size()));
      if (v.empty()) shape_known = true;
    } else if (depth >= shape.size() || shape[depth] != static_cast<int64_t>(v.size())) {
      fail(Code::INVALID_ARGUMENT, what + " is a ragged list: every list at one depth must have the same length " +
                                       "(the shape so far is " + shape_str(shape) + ")");
    }
    for (const json& e : v) decode_into(e, what, depth + 1, shape, shape_known, values);
    return;
  }
  if (!shape_known) {
    shape_known = true;
  } else if (depth != shape.size()) {
    fail(Code::INVALID_ARGUMENT, what + " mixes numbers and lists at one depth (shape " + shape_str(shape) + ")");
  }
  if (v.is_number()) {
    values.push_back(static_cast<float>(v.get<double>()));
    return;
  }
  if (v.is_object() && v.size() == 1 && v.contains("b64")) {
    const json& b = v["b64"];
    if (!b.is_string() || !valid_b64(b.get<std::string>()))
      fail(Code::INVALID_ARGUMENT, what + ": JSON Value: {\"b64\": ...} is not formatted correctly for base64 data");
    fail(Code::INVALID_ARGUMENT, what + ": base64 binary data was given, but the input is float32 (DT_FLOAT)");
  }
  fail(Code::INVALID_ARGUMENT, what + ": expected a number (the input is float32), got " +
                                   (v.is_string() ? "a string" : v.is_boolean() ? "a boolean" : v.is_null() ? "null" : "an object"));
}

}  // namespace

void decode_dense(const json& value, const std::string& what, std::vector<int64_t>& shape, std::vector<float>& values) {
  bool known = false;
  decode_into(value, what, 0, shape, known, values);
}

json parse_json_body(const std::string& body, int max_depth) {
  bool too_deep = false;
  json::parser_callback_t limit = [&](int depth, json::parse_event_t event, json&) {
    if (depth > max_depth && (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start))
      too_deep = true;
    return !too_deep;
  };
  json j;
  try {
    j = json::parse(body, limit);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number that overflows a double
    fail(Code::INVALID_ARGUMENT, std::string("JSON Parse error: ") + e.what());
  }
  if (too_deep)
    fail(Code::INVALID_ARGUMENT, "JSON Parse error: nesting deeper than " + std::to_string(max_depth) + " levels");
  return j;
}

bool decode_predict_body(const json& body, PredictCall& call) {
  if (!body.is_object()) fail(Code::INVALID_ARGUMENT, "the request body must be a JSON object");
  if (auto s = body.find("signature_name"); s != body.end()) {
    if (!s->is_string()) fail(Code::INVALID_ARGUMENT, "'signature_name' must be a string");
    call.model.signature = s->get<std::string>();
  }
  const auto instances = body.find("instances"), inputs = body.find("inputs");
  if (instances != body.end() && inputs != body.end())
    fail(Code::INVALID_ARGUMENT, "Not formatted correctly: both 'instances' and 'inputs' keys were given; use one");
  if (instances == body.end() && inputs == body.end()) fail(Code::INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key");
  call.shape.clear();
  call.values.clear();
  if (instances != body.end()) {
    if (!instances->is_array()) fail(Code::INVALID_ARGUMENT, "'instances' must be a list");
    // Rows given as objects name their input: {"input": [...]}.
    const bool named = !instances->empty() && (*instances)[0].is_object() && !(*instances)[0].contains("b64");
    if (!named) {
      decode_dense(*instances, "'instances'", call.shape, call.values);
      return true;
    }
    call.shape.push_back(static_cast<int64_t>(instances->size()));
    std::vector<int64_t> row_shape;
    for (size_t i = 0; i < instances->size(); ++i) {
      const json& row = (*instances)[i];
      const std::string what = "instance " + std::to_string(i);
      if (!row.is_object()) fail(Code::INVALID_ARGUMENT, what + ": every instance must be an object when the first is");
      if (row.size() != 1)
        fail(Code::INVALID_ARGUMENT, what + ": expected exactly one input (" + kInputName + "), got " +
                                         std::to_string(row.size()) + " keys");
      call.input_name = row.begin().key();
      std::vector<int64_t> shape;
      decode_dense(row.begin().value(), what, shape, call.values);
      if (i == 0) row_shape = shape;
      if (shape != row_shape)
        fail(Code::INVALID_ARGUMENT, what + " has shape " + shape_str(shape) + " but instance 0 has " +
                                         shape_str(row_shape) + "; all instances must share a shape");
    }
    call.shape.insert(call.shape.end(), row_shape.begin(), row_shape.end());
    return true;
  }
  const json* tensor = &*inputs;
  if (inputs->is_object() && !inputs->contains("b64")) {
    if (inputs->size() != 1)
      fail(Code::INVALID_ARGUMENT, "'inputs' names " + std::to_string(inputs->size()) + " inputs; the signature has one (" +
                                       kInputName + ")");
    call.input_name = inputs->begin().key();
    tensor = &inputs->begin().value();
  }
  decode_dense(*tensor, "'inputs'", call.shape, call.values);
  return false;
}

namespace {

// The :predict body read straight into floats, without a JSON document in between: the common
// forms only ({"instances": [...]}, {"inputs": [...]}, {"inputs": {"NAME": [...]}}, with an
// optional "signature_name" in plain characters). Anything else (escapes, named rows, scalars, a
// repeated key, a ragged list, bad syntax) is declined, and the caller decodes the body through
// the document, which gives the exact error. Numbers become what nlohmann's parser and
// get<double>() followed by a float cast give (both round correctly from the decimal).
class PredictScanner {
 public:
  PredictScanner(const std::string& body, int max_depth)
      : p_(body.data()), end_(body.data() + body.size()), max_depth_(max_depth) {
    values_.reserve(body.size() / 2 + 1);  // a number takes at least two characters with its comma
  }

  bool scan(PredictCall& call, bool& rows) {
    if (!lit('{')) return false;
    bool have_signature = false, have_tensor = false, have_name = false;
    std::string_view signature, input_name;
    ws();
    if (p_ < end_ && *p_ == '}') return false;  // no tensor
    do {
      std::string_view key;
      if (!str(key) || !lit(':')) return false;
      if (key == "signature_name") {
        if (have_signature || !str(signature)) return false;
        have_signature = true;
      } else if (key == "instances" || key == "inputs") {
        if (have_tensor) return false;
        have_tensor = true;
        rows = key == "instances";
        ws();
        if (!rows && p_ < end_ && *p_ == '{') {  // {"inputs": {"input": [...]}}
          ++p_;
          if (!str(input_name) || !lit(':') || !dense() || !lit('}')) return false;
          have_name = true;
        } else if (!dense()) {
          return false;
        }
      } else {
        return false;
      }
    } while (lit(','));
    if (!lit('}') || !have_tensor) return false;
    ws();
    if (p_ != end_) return false;
    if (have_signature) call.model.signature.assign(signature);
    if (have_name) call.input_name.assign(input_name);
    for (int64_t& d : shape_)
      if (d < 0) return false;
    call.shape = std::move(shape_);
    call.values = std::move(values_);
    return true;
  }

 private:
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool lit(char c) {
    ws();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  // A string without escapes or control characters.
  bool str(std::string_view& out) {
    if (!lit('"')) return false;
    const char* begin = p_;
    while (p_ < end_ && *p_ != '"') {
      if (*p_ == '\\' || static_cast<unsigned char>(*p_) < 0x20) return false;
      ++p_;
    }
    if (p_ == end_) return false;
    out = std::string_view(begin, static_cast<size_t>(p_ - begin));
    ++p_;
    return true;
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  // A JSON number (RFC 8259 grammar, checked here: from_chars alone accepts more).
  bool number(float& v) {
    const char* begin = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && digit(*p_)) ++p_;
    } else {
      return false;
    }
    bool integer = true;
    if (p_ < end_ && *p_ == '.') {
      integer = false;
      const char* d = ++p_;
      while (p_ < end_ && digit(*p_)) ++p_;
      if (p_ == d) return false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      const char* d = p_;
      while (p_ < end_ && digit(*p_)) ++p_;
      if (p_ == d) return false;
    }
    double d = 0;
    const auto [q, ec] = std::from_chars(begin, p_, d);
    if (ec != std::errc() || q != p_) return false;
    if (integer && d == 0) d = 0;  // "-0" is the integer 0 to nlohmann
    v = static_cast<float>(d);
    return true;
  }
  // A nested list of numbers, its shape checked as decode_into checks it.
  bool dense() { return lit('[') && list(0); }
  bool list(size_t depth) {  // after its '['
    if (static_cast<int>(depth) + 2 > max_depth_) return false;  // the object and the lists
    if (!known_) {
      shape_.push_back(-1);  // set when this first list at its depth closes
    } else if (depth >= shape_.size()) {
      return false;
    }
    int64_t n = 0;
    ws();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      known_ = true;
    } else {
      do {
        ws();
        if (p_ < end_ && *p_ == '[') {
          ++p_;
          if (!list(depth + 1)) return false;
        } else {
          if (!known_) {
            known_ = true;
          } else if (depth + 1 != shape_.size()) {
            return false;
          }
          float v;
          if (!number(v)) return false;
          values_.push_back(v);
        }
        ++n;
      } while (lit(','));
      if (!lit(']')) return false;
    }
    if (shape_[depth] < 0) shape_[depth] = n;
    return shape_[depth] == n;
  }

  const char* p_;
  const char* end_;
  int max_depth_;
  bool known_ = false;
  std::vector<int64_t> shape_;
  std::vector<float> values_;
};

}  // namespace

bool scan_predict_body(const std::string& body, int max_depth, PredictCall& call, bool& rows) {
  PredictScanner scanner(body, max_depth);
  return scanner.scan(call, rows);
}

bool decode_predict_text(const std::string& body, int max_depth, PredictCall& call) {
  bool rows = false;
  if (scan_predict_body(body, max_depth, call, rows)) return rows;
  return decode_predict_body(parse_json_body(body, max_depth), call);
}

void append_json_float(std::string& out, float v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "Infinity" : "-Infinity";
  } else {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, p);
  }
}

namespace {

void append_rows(std::string& out, const PredictResult& r) {
  out += '[';
  for (int64_t i = 0; i < r.rows; ++i) {
    if (i) out += ',';
    out += '[';
    for (int c = 0; c < r.classes; ++c) {
      if (c) out += ',';
      append_json_float(out, r.probabilities[static_cast<size_t>(i * r.classes + c)]);
    }
    out += ']';
  }
  out += ']';
}

struct V1Path {
  ModelRef model;
  std::string verb;  // predict, classify, regress, metadata, or "" (status)
};

// /v1/models/{m}[/versions/{v}|/labels/{l}][:verb|/metadata]; false if malformed.
bool parse_v1_path(const std::string& path, V1Path& out) {
  const char* prefix = "/v1/models/";
  if (!starts_with_icase(path, 0, prefix)) return false;
  size_t at = std::strlen(prefix);
  const size_t name_end = path.find_first_of("/:", at);
  out.model.name = path.substr(at, name_end - at);
  if (out.model.name.empty()) return false;
  at = name_end;
  if (at != std::string::npos && path[at] == '/') {
    const bool versions = starts_with_icase(path, at, "/versions/");
    const bool labels = !versions && starts_with_icase(path, at, "/labels/");
    if (versions || labels) {
      at += versions ? 10 : 8;
      const size_t end = path.find_first_of("/:", at);
      const std::string value = path.substr(at, end - at);
      if (versions) {
        int64_t v = 0;
        if (!parse_version(value, &v)) return false;
        out.model.version = v;
      } else {
        if (value.empty()) return false;
        out.model.label = value;
      }
      at = end;
    }
  }
  if (at == std::string::npos) return true;
  if (path[at] == ':') {
    out.verb = lower(path.substr(at + 1));
    return out.verb == "predict" || out.verb == "classify" || out.verb == "regress";
  }
  if (lower(path.substr(at)) == "/metadata") {
    out.verb = "metadata";
    return true;
  }
  return false;
}

double micros_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

}  // namespace

HttpReply RestHandler::handle(const HttpRequest& request, Clock::time_point arrival) const {
  HttpReply reply;
  try {
    if (options_.monitoring.prometheus && request.path == options_.monitoring.path && request.method == "GET") {
      reply.content_type = "text/plain; version=0.0.4";
      reply.body = metrics_ ? metrics_->text() : "";
    } else if (starts_with_icase(request.path, 0, "/v1/") || lower(request.path) == "/v1") {
      reply = v1(request, arrival);
    } else if (request.path == "/v2" || request.path.rfind("/v2/", 0) == 0) {
      reply = v2(request, arrival);
    } else {
      reply = error_reply({Code::NOT_FOUND, "Not found: " + request.method + " " + request.path});
    }
  } catch (...) {
    reply = error_reply(current_exception_status());
  }
  if (options_.cors) {
    reply.headers.emplace_back("Access-Control-Allow-Origin", "*");
    reply.headers.emplace_back("Access-Control-Allow-Methods", "POST, GET");
    reply.headers.emplace_back("Access-Control-Allow-Headers", "Content-Type");
  }
  return reply;
}

HttpReply RestHandler::v1(const HttpRequest& request, Clock::time_point arrival) const {
  V1Path p;
  const bool get = request.method == "GET", post = request.method == "POST";
  const bool ok = parse_v1_path(request.path, p);
  if (!ok || (!get && !post) || (get && p.verb != "" && p.verb != "metadata") ||
      (post && (p.verb == "" || p.verb == "metadata")))
    fail(Code::INVALID_ARGUMENT, "Malformed request: " + request.method + " " + request.path);
  if (p.model.version && !p.model.label.empty())
    fail(Code::INVALID_ARGUMENT, "Malformed request: a version and a label cannot both be given");

  if (get && p.verb.empty())  // status ignores labels, as in TF Serving
    return json_reply(200, proto_to_json(status_response(manager_.status(p.model.name, p.model.version))));

  if (get) {  // metadata
    ServableHandle h = predictor_.resolve(p.model);
    json out{{"model_spec", {{"name", h->name()}, {"signature_name", ""}, {"version", std::to_string(h->version())}}},
             {"metadata", {{"signature_def", json::parse(proto_to_json(signature_def_map(*h)))}}}};
    return json_reply(200, json_text(out, 2));
  }

  std::string version_label;
  const char* status = "OK";
  try {
    if (p.verb != "predict") {
      const json body = parse_json_body(request.body, options_.max_json_depth);
      // Tandem's one signature is a predict signature: classify and regress fail as TF Serving's do.
      ServableHandle h = predictor_.resolve(p.model);
      version_label = std::to_string(h->version());
      if (!body.is_object() || !body.contains("examples"))
        fail(Code::INVALID_ARGUMENT, "Expected 'examples' in the request body of :" + p.verb);
      fail(Code::INVALID_ARGUMENT, std::string("Expected ") + (p.verb == "classify" ? "classification" : "regression") +
                                       " signature method_name to be tensorflow/serving/" + p.verb +
                                       ". Was: " + kPredictMethod);
    }
    PredictCall call;
    call.model = p.model;
    const bool rows = decode_predict_text(request.body, options_.max_json_depth, call);
    call.deadline = arrival + std::chrono::milliseconds(options_.timeout_ms);
    const PredictResult r = predictor_.predict(call);
    version_label = std::to_string(r.servable->version());
    std::string out;
    out.reserve(static_cast<size_t>(r.rows * r.classes * 12 + 32));
    out += rows ? "{\"predictions\":" : "{\"outputs\":";
    append_rows(out, r);
    out += '}';
    if (metrics_) metrics_->request(p.model.name, version_label, p.verb, "REST", status, micros_since(arrival));
    return json_reply(200, std::move(out));
  } catch (...) {
    const Status s = current_exception_status();
    if (metrics_) metrics_->request(p.model.name, version_label, p.verb, "REST", code_name(s.code), micros_since(arrival));
    throw RequestError(s.code, s.message);
  }
}

namespace {

// /v2/models/{m}[/versions/{v}][/ready|/infer]
struct V2Path {
  ModelRef model;
  std::string tail;  // "", "ready", "infer"
};

bool parse_v2_model_path(const std::string& path, V2Path& out) {
  const std::string prefix = "/v2/models/";
  if (path.rfind(prefix, 0) != 0) return false;
  size_t at = prefix.size();
  size_t end = path.find('/', at);
  out.model.name = path.substr(at, end - at);
  if (out.model.name.empty()) return false;
  at = end;
  if (at != std::string::npos && path.compare(at, 10, "/versions/") == 0) {
    at += 10;
    end = path.find('/', at);
    int64_t v = 0;
    if (!parse_version(path.substr(at, end - at), &v)) return false;
    out.model.version = v;
    at = end;
  }
  if (at == std::string::npos) return true;
  out.tail = path.substr(at + 1);
  return out.tail == "ready" || out.tail == "infer";
}

json v2_metadata(const ModelManager& manager, const Servable& s) {
  json versions = json::array();
  for (const VersionStatus& v : manager.status(s.name()))
    if (v.state == State::Available) versions.push_back(std::to_string(v.version));
  json in_shape = json::array({-1});
  for (int64_t d : s.input_shape().dims) in_shape.push_back(d);
  return json{{"name", s.name()},
              {"versions", versions},
              {"platform", "tandem"},
              {"inputs", json::array({{{"name", kInputName}, {"datatype", "FP32"}, {"shape", in_shape}}})},
              {"outputs", json::array({{{"name", kOutputName}, {"datatype", "FP32"}, {"shape", {-1, s.num_classes()}}}})}};
}

int64_t header_int(const HttpRequest& r, const char* name, int64_t fallback) {
  auto it = r.headers.find(name);
  if (it == r.headers.end()) return fallback;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (ec != std::errc() || p != it->second.data() + it->second.size() || v < 0)
    fail(Code::INVALID_ARGUMENT, std::string("header ") + name + " is not a non-negative integer: " + it->second);
  return v;
}

}  // namespace

HttpReply RestHandler::v2(const HttpRequest& request, Clock::time_point arrival) const {
  const bool get = request.method == "GET";
  if (get && request.path == "/v2")
    return json_reply(200, json_text(json{{"name", "tandem"}, {"version", TANDEM_VERSION}, {"extensions", {"binary_tensor_data"}}}));
  if (get && request.path == "/v2/health/live") return json_reply(200, "");
  if (get && request.path == "/v2/health/ready") return json_reply(manager_.ready() ? 200 : 400, "");
  V2Path p;
  if (!parse_v2_model_path(request.path, p) || (get == (p.tail == "infer")) || (!get && request.method != "POST"))
    fail(Code::NOT_FOUND, "Not found: " + request.method + " " + request.path);
  if (p.tail == "ready") {
    bool ready = true;
    try {
      predictor_.resolve(p.model);
    } catch (const RequestError&) {
      ready = false;
    }
    return json_reply(ready ? 200 : 400, "");
  }
  if (p.tail.empty()) return json_reply(200, json_text(v2_metadata(manager_, *predictor_.resolve(p.model))));

  // infer: JSON, optionally followed by binary tensors (Inference-Header-Content-Length).
  std::string version_label;
  try {
    const int64_t json_len = header_int(request, "inference-header-content-length", -1);
    if (json_len > static_cast<int64_t>(request.body.size()))
      fail(Code::INVALID_ARGUMENT, "Inference-Header-Content-Length " + std::to_string(json_len) +
                                       " is longer than the body (" + std::to_string(request.body.size()) + " bytes)");
    const size_t header_bytes = json_len < 0 ? request.body.size() : static_cast<size_t>(json_len);
    const json body = parse_json_body(request.body.substr(0, header_bytes), options_.max_json_depth);
    if (!body.is_object() || !body.contains("inputs") || !body["inputs"].is_array())
      fail(Code::INVALID_ARGUMENT, "an infer request needs an \"inputs\" list");
    const json& inputs = body["inputs"];
    if (inputs.size() != 1)
      fail(Code::INVALID_ARGUMENT, "expected 1 input (" + std::string(kInputName) + "), got " + std::to_string(inputs.size()));
    const json& in = inputs[0];
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string() || !in.contains("shape") ||
        !in["shape"].is_array() || !in.contains("datatype") || !in["datatype"].is_string())
      fail(Code::INVALID_ARGUMENT, "an input needs \"name\", \"shape\" and \"datatype\"");
    PredictCall call;
    call.model = p.model;
    call.input_name = in["name"].get<std::string>();
    if (in["datatype"] != "FP32")
      fail(Code::INVALID_ARGUMENT, "input '" + call.input_name + "' has datatype " + in["datatype"].get<std::string>() +
                                       "; the model takes FP32");
    for (const json& d : in["shape"]) {
      if (!d.is_number_integer()) fail(Code::INVALID_ARGUMENT, "input shape must be a list of integers");
      call.shape.push_back(d.get<int64_t>());
    }
    const int64_t elements = checked_elements(call.shape, "input '" + call.input_name + "'");
    size_t binary_at = header_bytes;
    const json* params = in.contains("parameters") ? &in["parameters"] : nullptr;
    if (params && params->is_object() && params->contains("binary_data_size")) {
      const json& size = (*params)["binary_data_size"];
      if (!size.is_number_unsigned() || size.get<uint64_t>() != static_cast<uint64_t>(elements) * 4 ||
          request.body.size() - binary_at < size.get<uint64_t>())
        fail(Code::INVALID_ARGUMENT, "input '" + call.input_name + "': binary_data_size must be " +
                                         std::to_string(elements * 4) + " bytes for shape " + shape_str(call.shape) +
                                         " and within the body");
      call.set_input_bytes(request.body.data() + binary_at, static_cast<size_t>(elements));
      binary_at += static_cast<size_t>(elements) * 4;
    } else {
      if (!in.contains("data")) fail(Code::INVALID_ARGUMENT, "input '" + call.input_name + "' has no \"data\"");
      std::vector<int64_t> data_shape;
      decode_dense(in["data"], "input '" + call.input_name + "' data", data_shape, call.values);
      if (static_cast<int64_t>(call.values.size()) != elements)
        fail(Code::INVALID_ARGUMENT, "input '" + call.input_name + "' has " + std::to_string(call.values.size()) +
                                         " values for shape " + shape_str(call.shape));
    }
    bool binary_out = false;
    if (body.contains("parameters") && body["parameters"].is_object()) {
      const json& bp = body["parameters"];
      if (bp.contains("binary_data_output") && bp["binary_data_output"].is_boolean())
        binary_out = bp["binary_data_output"].get<bool>();
    }
    if (body.contains("outputs")) {
      const json& outs = body["outputs"];
      if (!outs.is_array()) fail(Code::INVALID_ARGUMENT, "\"outputs\" must be a list");
      for (const json& o : outs) {
        if (!o.is_object() || !o.contains("name") || o["name"] != kOutputName)
          fail(Code::INVALID_ARGUMENT, "unknown output " + json_text(o.is_object() && o.contains("name") ? o["name"] : o) +
                                           "; the model's output is " + kOutputName);
        if (o.contains("parameters") && o["parameters"].is_object() && o["parameters"].contains("binary_data") &&
            o["parameters"]["binary_data"].is_boolean())
          binary_out = o["parameters"]["binary_data"].get<bool>();
      }
    }
    call.deadline = arrival + std::chrono::milliseconds(options_.timeout_ms);
    const PredictResult r = predictor_.predict(call);
    version_label = std::to_string(r.servable->version());
    json out{{"model_name", r.servable->name()}, {"model_version", version_label}};
    if (body.contains("id") && body["id"].is_string()) out["id"] = body["id"];
    json output{{"name", kOutputName}, {"datatype", "FP32"}, {"shape", {r.rows, r.classes}}};
    HttpReply reply;
    if (binary_out) {
      output["parameters"] = {{"binary_data_size", r.probabilities.size() * 4}};
      out["outputs"] = json::array({output});
      reply.body = json_text(out);
      reply.headers.emplace_back("Inference-Header-Content-Length", std::to_string(reply.body.size()));
      reply.body.append(reinterpret_cast<const char*>(r.probabilities.data()), r.probabilities.size() * 4);
      reply.content_type = "application/octet-stream";
    } else {
      std::string data;
      data.reserve(r.probabilities.size() * 12);
      data += '[';
      for (size_t i = 0; i < r.probabilities.size(); ++i) {
        if (i) data += ',';
        append_json_float(data, r.probabilities[i]);
      }
      data += ']';
      output["data"] = json::array();
      out["outputs"] = json::array({output});
      reply.body = json_text(out);
      // Splice the pre-formatted floats in place of the empty list (no double round trip).
      const std::string empty = "\"data\":[]";
      const size_t at = reply.body.find(empty);
      reply.body.replace(at, empty.size(), "\"data\":" + data);
    }
    if (metrics_) metrics_->request(p.model.name, version_label, "infer", "V2", "OK", micros_since(arrival));
    return reply;
  } catch (...) {
    const Status s = current_exception_status();
    if (metrics_) metrics_->request(p.model.name, version_label, "infer", "V2", code_name(s.code), micros_since(arrival));
    throw RequestError(s.code, s.message);
  }
}

}  // namespace tandem::serve

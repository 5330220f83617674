// tandem serve's C++ parts without sockets: version policies, config validation and text-format
// parsing, REST and gRPC request decoding, and the model manager's lifecycle (hot swap, failed and
// half-copied versions, labels, rollback) through the REST handler. Run under ASan/UBSan in CI.
#ifdef TANDEM_HAVE_SERVE
#include <catch2/catch.hpp>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "engine/errors.h"
#include "storage/loaded_model.h"
#include "kernels/backends.h"
#include "serve/batching.h"
#include "serve/config.h"
#include "serve/grpc_api.h"
#include "serve/metrics.h"
#include "serve/model_manager.h"
#include "serve/predictor.h"
#include "serve/rest_api.h"
#include "temp_dir.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "test_support.h"

using namespace tandem;
using namespace tandem::serve;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

VersionPolicy latest(int64_t n) {
  VersionPolicy p;
  p.num_versions = n;
  return p;
}

ModelSource source(const std::string& name, const std::string& base_path) {
  ModelSource m;
  m.name = name;
  m.base_path = base_path;
  return m;
}

Code code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const RequestError& e) {
    return e.code();
  }
  return Code::OK;
}

// A small model: Flatten + Dense(10) on 28x28x1, weights from `seed`.
const char* kTinySpec = R"({"name": "tiny", "input_shape": [28, 28, 1],
  "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]})";

void write_version(const std::string& dir, uint64_t seed) {
  Model m = test::model_from(kTinySpec);
  const std::vector<float> arena = m.initial_weights(seed);
  ModelVersion v;
  v.tensors = m.to_tensors(arena);
  v.model_json = model_json(m, {}, json{{"seed", seed}});
  write_model_version(dir, v);
}

// What `dir` computes for `input` (one row), from the files.
std::vector<float> reference(const std::string& dir, const std::vector<float>& input) {
  LoadedModel lm = load_model(dir);
  auto backend = make_cpu_backend(1);
  backend->set_inference_only(true);  // the servable's kernels
  Replica r(lm.model, *backend, 1);
  r.set_weights(lm.arena);
  r.load_input(input.data(), 1);
  StepContext ctx;
  ctx.backend = backend.get();
  ctx.batch = 1;
  ctx.want_probs = true;
  const float* p = r.forward(ctx);
  return std::vector<float>(p, p + lm.model.num_classes());
}

struct Rig {
  test::TempDir tmp;
  std::string base = tmp / "fashion";
  ServerMetrics metrics;
  std::unique_ptr<ModelManager> manager;
  std::unique_ptr<Predictor> predictor;
  std::unique_ptr<RestHandler> rest;
  explicit Rig(bool allow_unavailable_labels = false) {
    fs::create_directories(base);
    ManagerOptions o;
    o.servable.max_batch = 8;
    o.allow_labels_for_unavailable = allow_unavailable_labels;
    manager = std::make_unique<ModelManager>(o);
    predictor = std::make_unique<Predictor>(*manager, &metrics, Limits{100});
    RestOptions ro;
    ro.monitoring.prometheus = true;
    rest = std::make_unique<RestHandler>(*manager, *predictor, &metrics, ro);
  }
  HttpReply call(const std::string& method, const std::string& path, const std::string& body = "") const {
    return rest->handle(HttpRequest{method, path, {}, body}, Clock::now());
  }
  json predict_rows(const std::string& path, int rows, float value = 0.25f) const {
    json instances = json::array();
    for (int i = 0; i < rows; ++i) instances.push_back(json(28, json(28, json::array({value}))));
    HttpReply r = call("POST", path, json{{"instances", instances}}.dump());
    INFO(r.body);
    REQUIRE(r.status == 200);
    return json::parse(r.body);
  }
  int64_t served_version(const std::string& label = "") const {
    return manager->resolve("fashion", std::nullopt, label)->version();
  }
};

}  // namespace

TEST_CASE("serve: version policies pick the aspired versions", "[cpu][serve]") {
  const std::vector<int64_t> present{1, 2, 5, 9};
  CHECK(aspired_versions(latest(1), present) == std::vector<int64_t>{9});
  CHECK(aspired_versions(latest(2), present) == std::vector<int64_t>{5, 9});
  CHECK(aspired_versions(latest(10), present) == present);
  CHECK(aspired_versions(latest(1), {}).empty());
  VersionPolicy all;
  all.kind = VersionPolicy::Kind::All;
  CHECK(aspired_versions(all, present) == present);
  VersionPolicy specific;
  specific.kind = VersionPolicy::Kind::Specific;
  specific.versions = {2, 3, 9};
  CHECK(aspired_versions(specific, present) == std::vector<int64_t>{2, 9});  // 3 is not on disk
}

TEST_CASE("serve: configs are validated", "[cpu][serve]") {
  auto bad = [](ServerConfig c) { return code_of([&] { validate_config(c); }); };
  ModelSource ok = source("m", "/models/m");
  ok.labels = {{"stable", 1}};
  CHECK(bad({ok}) == Code::OK);
  CHECK(bad({ok, ok}) == Code::INVALID_ARGUMENT);  // twice
  ModelSource m = ok;
  m.name = "";
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
  m = ok;
  m.name = "a/b";
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
  m = ok;
  m.base_path = "";
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
  m = ok;
  m.labels = {{"bad-label", 1}};
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
  m = ok;
  m.labels = {{"stable", 0}};
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
  m = ok;
  m.policy.kind = VersionPolicy::Kind::Specific;
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);  // no versions
  m.policy.versions = {-3};
  CHECK(bad({m}) == Code::INVALID_ARGUMENT);
}

TEST_CASE("serve: text-format model config files", "[cpu][serve]") {
  test::TempDir tmp;
  const std::string path = tmp / "models.config";
  test::write_bytes(path, R"(model_config_list {
  config {
    name: "a"
    base_path: "/models/a"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config { name: "b" base_path: "/models/b" model_version_policy { latest { num_versions: 2 } } }
  config { name: "c" base_path: "/models/c" model_version_policy { all {} } }
}
)");
  const ServerConfig c = read_model_config_file(path);
  REQUIRE(c.size() == 3);
  CHECK(c[0].policy.kind == VersionPolicy::Kind::Specific);
  CHECK(c[0].policy.versions == std::vector<int64_t>{1, 3});
  CHECK(c[0].labels == std::map<std::string, int64_t>{{"canary", 3}, {"stable", 1}});
  CHECK(c[1].policy.kind == VersionPolicy::Kind::Latest);
  CHECK(c[1].policy.num_versions == 2);
  CHECK(c[2].policy.kind == VersionPolicy::Kind::All);

  auto error_of = [&](const std::string& text) {
    test::write_bytes(path, text);
    try {
      read_model_config_file(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // The file and line of a syntax error, an unknown field, a semantic error.
  CHECK_THAT(error_of("model_config_list {\n  config {\n    name: \"a\"\n    base_path: /x\n"),
             Catch::StartsWith(path + ":4:"));
  CHECK_THAT(error_of("model_config_list { config { name: \"a\" colour: 3 } }"),
             Catch::StartsWith(path + ":1:") && Catch::Contains("colour"));
  CHECK_THAT(error_of("model_config_list { config { name: \"a\" } }"), Catch::Contains("empty base_path"));
  CHECK_THAT(error_of("model_config_list { config { name: \"a\" base_path: \"/a\" model_platform: \"pytorch\" } }"),
             Catch::Contains("pytorch"));
  CHECK_THROWS_AS(read_model_config_file(tmp / "missing.config"), Error);

  test::write_bytes(path, "prometheus_config { enable: true path: \"/metrics\" }");
  const MonitoringOptions mon = read_monitoring_config_file(path);
  CHECK(mon.prometheus);
  CHECK(mon.path == "/metrics");
}

TEST_CASE("serve: REST bodies decode into shapes and floats", "[cpu][serve]") {
  auto decode = [](const std::string& text, PredictCall& call) {
    return decode_predict_body(parse_json_body(text, 64), call);
  };
  PredictCall call;
  CHECK(decode(R"({"instances": [[[1], [2]], [[3], [4.5]]]})", call));
  CHECK(call.shape == std::vector<int64_t>{2, 2, 1});
  CHECK(call.values == std::vector<float>{1, 2, 3, 4.5f});
  CHECK(decode(R"({"signature_name": "serving_default", "instances": [{"input": [1, 2]}, {"input": [3, 4]}]})", call));
  CHECK(call.shape == std::vector<int64_t>{2, 2});
  CHECK(call.model.signature == "serving_default");
  CHECK_FALSE(decode(R"({"inputs": {"input": [[1, 2, 3]]}})", call));
  CHECK(call.shape == std::vector<int64_t>{1, 3});
  CHECK_FALSE(decode(R"({"inputs": [[1], [2]]})", call));
  CHECK(call.shape == std::vector<int64_t>{2, 1});
  CHECK(decode(R"({"instances": []})", call));
  CHECK(call.shape == std::vector<int64_t>{0});

  for (const char* bad : {R"({"instances": [[1, 2], [3]]})", R"({"instances": [[1, 2], 3]})",
                          R"({"instances": [["a"]]})", R"({"instances": [[true]]})", R"({"instances": [[null]]})",
                          R"({"instances": [{"b64": "!!!"}]})", R"({"instances": [{"b64": "AAAA"}]})",
                          R"({"instances": [[1]], "inputs": [[1]]})", R"({"signature_name": 3, "instances": [1]})",
                          R"({})", R"([1, 2])", R"({"instances": 5})", R"({"inputs": {"a": [1], "b": [2]}})",
                          R"({"instances": [{"input": [1]}, [2]]})", R"({"instances": [{"input": [1]}, {"input": [1, 2]}]})",
                          "{\"instances\": [1, 2", "", "nul"}) {
    INFO(bad);
    PredictCall c;
    CHECK(code_of([&] { decode(bad, c); }) == Code::INVALID_ARGUMENT);
  }
  // Nesting is bounded before the parser recurses.
  std::string deep = "{\"instances\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  PredictCall c;
  CHECK(code_of([&] { decode(deep, c); }) == Code::INVALID_ARGUMENT);

  std::string out;
  append_json_float(out, 0.1f);
  out += ',';
  append_json_float(out, std::numeric_limits<float>::quiet_NaN());
  out += ',';
  append_json_float(out, -std::numeric_limits<float>::infinity());
  CHECK(out == "0.1,NaN,-Infinity");
}

TEST_CASE("serve: the fast :predict reader equals the JSON document's decoding", "[cpu][serve]") {
  // What the document path gives (or its error code), to compare the fast reader with.
  struct Decoded {
    bool ok = false, rows = false;
    Code code = Code::OK;
    PredictCall call;
  };
  auto via_document = [](const std::string& text) {
    Decoded d;
    try {
      d.rows = decode_predict_body(parse_json_body(text, 64), d.call);
      d.ok = true;
    } catch (...) {
      d.code = current_exception_status().code;
    }
    return d;
  };
  auto via_text = [](const std::string& text) {
    Decoded d;
    try {
      d.rows = decode_predict_text(text, 64, d.call);
      d.ok = true;
    } catch (...) {
      d.code = current_exception_status().code;
    }
    return d;
  };
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  };
  auto expect_same = [&](const std::string& text) {
    INFO(text.substr(0, 300));
    const Decoded a = via_document(text), b = via_text(text);
    REQUIRE(a.ok == b.ok);
    if (!a.ok) {
      CHECK(a.code == b.code);
      return;
    }
    CHECK(a.rows == b.rows);
    CHECK(a.call.shape == b.call.shape);
    CHECK(same_bits(a.call.values, b.call.values));
    CHECK(a.call.model.signature == b.call.model.signature);
    CHECK(a.call.input_name == b.call.input_name);
  };
  // The common forms are read by the fast reader itself (not declined), with the document's values.
  const std::vector<std::string> common = {
      R"({"instances": [[[1], [2]], [[3], [4.5]]]})",
      R"({"signature_name": "serving_default", "instances": [[0.1, -0, 1e-3, 2E+2, -7.25e-1, 0.30000000000000004]]})",
      R"({"inputs": [[1], [2]]})",
      R"({"inputs": {"input": [[1, 2, 3]]}})",
      " {\n \"instances\" :\t[ [ 1 ,2 ] , [3,4] ] \r\n}\n",
      R"({"instances": []})",
      R"({"instances": [[], []]})",
      R"({"instances": [16777217, 3.4028235677973366e38, 1.401298464324817e-45, 123456789012345678901234567890]})",
  };
  for (const std::string& text : common) {
    INFO(text);
    PredictCall call;
    bool rows = false;
    CHECK(scan_predict_body(text, 64, call, rows));
    expect_same(text);
  }
  // Random bodies the way clients write them, and random damage to them: the two paths agree on
  // every one (the fast reader declines what it does not take, and the document decides).
  std::mt19937 rng(7);
  auto number = [&] {
    std::uniform_real_distribution<double> u(-3, 3);
    char buf[64];
    switch (rng() % 4) {
      case 0: std::snprintf(buf, sizeof buf, "%.9g", u(rng)); break;
      case 1: std::snprintf(buf, sizeof buf, "%d", static_cast<int>(rng() % 256)); break;
      case 2: std::snprintf(buf, sizeof buf, "%.17e", u(rng) * 1e-30); break;
      default: std::snprintf(buf, sizeof buf, "%.3f", u(rng)); break;
    }
    return std::string(buf);
  };
  const std::string damage = "[]{},:\"0.-eE+ \\x";
  for (int i = 0; i < 400; ++i) {
    const int rows = 1 + static_cast<int>(rng() % 3), cols = 1 + static_cast<int>(rng() % 4);
    std::string t = rng() % 2 ? "{\"instances\": [" : "{\"signature_name\": \"s\", \"inputs\": [";
    for (int r = 0; r < rows; ++r) {
      t += r ? ", [" : "[";
      for (int c = 0; c < cols; ++c) t += (c ? "," : "") + number();
      t += "]";
    }
    t += "]}";
    expect_same(t);
    for (int k = 0; k < 4; ++k) {
      std::string bad = t;
      const size_t at = rng() % bad.size();
      switch (rng() % 3) {
        case 0: bad[at] = damage[rng() % damage.size()]; break;
        case 1: bad.erase(at, 1); break;
        default: bad.insert(at, 1, damage[rng() % damage.size()]); break;
      }
      expect_same(bad);
    }
  }
}

TEST_CASE("serve: gRPC TensorProtos decode with TensorFlow's semantics", "[cpu][serve]") {
  tensorflow::TensorProto t;
  t.set_dtype(tensorflow::DT_FLOAT);
  t.mutable_tensor_shape()->add_dim()->set_size(2);
  t.mutable_tensor_shape()->add_dim()->set_size(2);
  const float content[4] = {1, 2, 3, 4};
  t.set_tensor_content(std::string(reinterpret_cast<const char*>(content), sizeof(content)));
  PredictCall call;
  decode_tensor_proto(t, "input", call);
  CHECK(call.shape == std::vector<int64_t>{2, 2});
  CHECK(std::vector<float>(call.input(), call.input() + call.input_count()) == std::vector<float>{1, 2, 3, 4});
  CHECK(call.borrowed == reinterpret_cast<const float*>(t.tensor_content().data()));  // read in place

  t.set_tensor_content(std::string(12, '\0'));  // 3 floats for 4 elements
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);
  t.clear_tensor_content();
  t.add_float_val(7);
  t.add_float_val(8);
  decode_tensor_proto(t, "input", call);  // a shorter float_val repeats its last value
  CHECK(call.borrowed == nullptr);
  CHECK(std::vector<float>(call.input(), call.input() + call.input_count()) == std::vector<float>{7, 8, 8, 8});
  for (int i = 0; i < 3; ++i) t.add_float_val(9);
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);  // 5 for 4
  t.clear_float_val();
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);  // none
  t.add_float_val(1);
  t.set_dtype(tensorflow::DT_DOUBLE);
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);
  t.set_dtype(tensorflow::DT_FLOAT);
  t.mutable_tensor_shape()->mutable_dim(0)->set_size(-2);
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);
  t.mutable_tensor_shape()->mutable_dim(0)->set_size(int64_t{1} << 40);
  t.mutable_tensor_shape()->mutable_dim(1)->set_size(int64_t{1} << 40);
  CHECK(code_of([&] { decode_tensor_proto(t, "input", call); }) == Code::INVALID_ARGUMENT);
}

TEST_CASE("serve: a new version swaps in, a deleted one swaps back, requests hold their version", "[cpu][serve]") {
  Rig rig;
  write_version(rig.base + "/1", 1);
  REQUIRE(rig.manager->reload({source("fashion", rig.base)}).ok());
  CHECK(rig.served_version() == 1);
  const std::vector<float> input(784, 0.25f);
  json p1 = rig.predict_rows("/v1/models/fashion:predict", 1);
  const std::vector<float> want1 = reference(rig.base + "/1", input);
  for (int c = 0; c < 10; ++c) CHECK(p1["predictions"][0][c].get<float>() == Approx(want1[c]).margin(1e-6));

  ServableHandle in_flight = rig.manager->resolve("fashion", std::nullopt, "");
  write_version(rig.base + "/2", 2);
  rig.manager->poll();
  CHECK(rig.served_version() == 2);
  // Version 1 is unloading but alive while a request holds it; END once the last handle goes.
  auto state_of = [&](int64_t v) { return rig.manager->status("fashion", v).at(0).state; };
  CHECK(state_of(1) == State::Unloading);
  std::vector<float> out(10);
  CHECK(in_flight->predict(input.data(), 1, out.data()));
  CHECK(out == want1);
  in_flight.reset();
  CHECK(state_of(1) == State::End);
  CHECK(state_of(2) == State::Available);
  json p2 = rig.predict_rows("/v1/models/fashion/versions/2:predict", 1);
  const std::vector<float> want2 = reference(rig.base + "/2", input);
  CHECK(p2["predictions"][0][0].get<float>() == Approx(want2[0]).margin(1e-6));
  CHECK(rig.call("POST", "/v1/models/fashion/versions/1:predict", "{\"instances\": []}").status == 404);

  // Rollback by deleting the newest version: 1 loads again before 2 goes.
  fs::remove_all(rig.base + "/2");
  rig.manager->poll();
  CHECK(rig.served_version() == 1);
  CHECK(state_of(2) == State::End);
  // A base path that loses every version keeps its last one serving.
  fs::remove_all(rig.base + "/1");
  rig.manager->poll();
  CHECK(rig.served_version() == 1);
  CHECK(rig.manager->ready());
}

TEST_CASE("serve: corrupted, incomplete and half-copied versions are never served", "[cpu][serve]") {
  Rig rig;
  write_version(rig.base + "/1", 1);
  REQUIRE(rig.manager->reload({source("fashion", rig.base)}).ok());

  // Version 2 with a flipped byte in its weights: END with the checksum error; 1 keeps serving.
  write_version(rig.tmp / "staging", 2);
  fs::copy(rig.tmp / "staging", rig.base + "/2");
  std::string weights = test::read_bytes(rig.base + "/2/weights.tdw");
  weights[weights.size() / 2] ^= 0x40;
  test::write_bytes(rig.base + "/2/weights.tdw", weights);
  rig.manager->poll();
  CHECK(rig.served_version() == 1);
  VersionStatus s2 = rig.manager->status("fashion", 2).at(0);
  CHECK(s2.state == State::End);
  CHECK(s2.status.code != Code::OK);
  CHECK_THAT(s2.status.message, Catch::Contains("weights.tdw"));
  HttpReply status = rig.call("GET", "/v1/models/fashion");
  CHECK_THAT(status.body, Catch::Contains("\"END\"") && Catch::Contains("weights.tdw"));

  // A half-copied version 3 (model.json only): never served, and served once complete.
  fs::create_directories(rig.base + "/3");
  fs::copy_file(rig.tmp / "staging/model.json", rig.base + "/3/model.json");
  rig.manager->poll();
  CHECK(rig.served_version() == 1);
  CHECK_THAT(rig.manager->status("fashion", 3).at(0).status.message, Catch::Contains("weights.tdw"));
  const std::string full = test::read_bytes(rig.tmp / "staging/weights.tdw");
  test::write_bytes(rig.base + "/3/weights.tdw", full.substr(0, full.size() / 2));  // still copying
  rig.manager->poll();
  CHECK(rig.served_version() == 1);
  test::write_bytes(rig.base + "/3/weights.tdw", full);
  rig.manager->poll();
  CHECK(rig.served_version() == 3);
  CHECK(rig.manager->status("fashion", 3).at(0).state == State::Available);

  // A directory that is not a model at all, and an unknown layer: END with the reason.
  fs::create_directories(rig.base + "/4");
  test::write_bytes(rig.base + "/4/notes.txt", "x");
  rig.manager->poll();
  CHECK(rig.served_version() == 3);
  CHECK_THAT(rig.manager->status("fashion", 4).at(0).status.message, Catch::Contains("model.json"));
}

TEST_CASE("serve: labels, specific policies and rollback through reloads", "[cpu][serve]") {
  Rig rig;
  for (int v = 1; v <= 3; ++v) write_version(rig.base + "/" + std::to_string(v), static_cast<uint64_t>(v));
  ModelSource m = source("fashion", rig.base);
  m.policy.kind = VersionPolicy::Kind::Specific;
  m.policy.versions = {1, 2};
  m.labels = {{"stable", 1}, {"canary", 2}};
  REQUIRE(rig.manager->reload({m}).ok());
  CHECK(rig.served_version() == 2);
  CHECK(rig.served_version("stable") == 1);
  CHECK(rig.served_version("canary") == 2);
  CHECK(code_of([&] { rig.manager->status("fashion", 3); }) == Code::NOT_FOUND);  // not aspired, never loaded
  json r = rig.predict_rows("/v1/models/fashion/labels/stable:predict", 2);
  CHECK(r["predictions"].size() == 2);
  CHECK(rig.call("POST", "/v1/models/fashion/labels/nope:predict", "{\"instances\":[]}").status == 400);

  // A label on a version that is not available is refused, and the old config stays.
  ModelSource bad = m;
  bad.labels["canary"] = 3;
  Status s = rig.manager->reload({bad});
  CHECK(s.code == Code::FAILED_PRECONDITION);
  CHECK(rig.served_version("canary") == 2);
  CHECK(rig.served_version() == 2);

  // A refused reload that also changes the policy unloads nothing that served: the same servable
  // objects keep answering, and the version the refused policy loaded is gone again.
  const ServableHandle held1 = rig.manager->resolve("fashion", int64_t{1}, ""),
                       held2 = rig.manager->resolve("fashion", int64_t{2}, "");
  ModelSource churn = m;
  churn.policy.versions = {3};
  churn.labels = {{"stable", 1}};  // version 1 is not in the new policy, and 3 is not loaded yet
  churn.labels["canary"] = 9;      // no such version: refused
  CHECK(rig.manager->reload({churn}).code == Code::FAILED_PRECONDITION);
  CHECK(rig.manager->resolve("fashion", int64_t{1}, "") == held1);
  CHECK(rig.manager->resolve("fashion", int64_t{2}, "") == held2);
  CHECK(rig.served_version("stable") == 1);
  CHECK(code_of([&] { rig.manager->resolve("fashion", int64_t{3}, ""); }) == Code::NOT_FOUND);
  // The same policy with a label on a version it loads is accepted in one reload.
  ModelSource forward = m;
  forward.policy.versions = {2, 3};
  forward.labels = {{"stable", 2}, {"canary", 3}};
  REQUIRE(rig.manager->reload({forward}).ok());
  CHECK(rig.served_version("canary") == 3);
  CHECK(rig.manager->resolve("fashion", int64_t{2}, "") == held2);
  REQUIRE(rig.manager->reload({m}).ok());

  // Rollback: a specific policy back to version 1 only, labels moved with it.
  ModelSource back = m;
  back.policy.versions = {1};
  back.labels = {{"stable", 1}};
  REQUIRE(rig.manager->reload({back}).ok());
  CHECK(rig.served_version() == 1);
  CHECK(code_of([&] { rig.manager->resolve("fashion", std::nullopt, "canary"); }) == Code::INVALID_ARGUMENT);
  CHECK(code_of([&] { rig.manager->resolve("fashion", int64_t{2}, ""); }) == Code::NOT_FOUND);

  // Several models; one dropped from the config is unloaded and then unknown.
  const std::string other = rig.tmp / "other";
  write_version(other + "/7", 7);
  REQUIRE(rig.manager->reload({back, source("other", other)}).ok());
  CHECK(rig.manager->resolve("other", std::nullopt, "")->version() == 7);
  REQUIRE(rig.manager->reload({source("other", other)}).ok());
  CHECK(code_of([&] { rig.manager->resolve("fashion", std::nullopt, ""); }) == Code::NOT_FOUND);
  CHECK(rig.call("GET", "/v1/models/fashion").status == 404);
}

TEST_CASE("serve: REST paths, codes and the v2 protocol", "[cpu][serve]") {
  Rig rig;
  write_version(rig.base + "/1", 1);
  REQUIRE(rig.manager->reload({source("fashion", rig.base)}).ok());
  struct Case {
    const char *method, *path, *body;
    int status;
  };
  const std::string one_row = json{{"instances", json::array({json(28, json(28, {0.5f}))})}}.dump();
  const char* ok_body = one_row.c_str();
  for (const Case& c : std::vector<Case>{
           {"GET", "/v1/models/fashion", "", 200},
           {"GET", "/V1/MODELS/fashion/versions/1", "", 200},
           {"GET", "/v1/models/fashion/versions/9", "", 404},
           {"GET", "/v1/models/nope", "", 404},
           {"GET", "/v1/models", "", 400},
           {"GET", "/v1/models/fashion/metadata", "", 200},
           {"GET", "/v1/models/fashion/versions/1/metadata", "", 200},
           {"POST", "/v1/models/fashion:predict", ok_body, 200},
           {"POST", "/v1/models/fashion/versions/abc:predict", ok_body, 400},
           {"POST", "/v1/models/fashion/versions/-1:predict", ok_body, 400},
           {"POST", "/v1/models/fashion/versions/99999999999999999999:predict", ok_body, 400},
           {"POST", "/v1/models/fashion/versions/1/labels/x:predict", ok_body, 400},
           {"POST", "/v1/models/fashion:explain", ok_body, 400},
           {"POST", "/v1/models/fashion:predict", "{\"signature_name\": \"other\", \"instances\": []}", 400},
           {"POST", "/v1/models/fashion:classify", "{\"examples\": [{\"x\": 1}]}", 400},
           {"POST", "/v1/models/fashion:regress", "{\"examples\": [{\"x\": 1}]}", 400},
           {"POST", "/v1/models/nope:classify", "{\"examples\": []}", 404},
           {"PUT", "/v1/models/fashion:predict", ok_body, 400},
           {"GET", "/nowhere", "", 404},
           {"GET", "/v2", "", 200},
           {"GET", "/v2/health/live", "", 200},
           {"GET", "/v2/health/ready", "", 200},
           {"GET", "/v2/models/fashion", "", 200},
           {"GET", "/v2/models/fashion/versions/1/ready", "", 200},
           {"GET", "/v2/models/fashion/versions/2/ready", "", 400},
           {"GET", "/v2/models/nope", "", 404},
           {"POST", "/v2/models/fashion/infer", "{\"inputs\": []}", 400},
           {"POST", "/v2/models/fashion/infer",
            "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 28, 28, 1], \"datatype\": \"INT64\", \"data\": [1]}]}", 400},
           {"POST", "/v2/models/fashion/infer",
            "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 28, 28, 1], \"datatype\": \"FP32\", \"data\": [1]}]}", 400},
           {"GET", "/monitoring/prometheus/metrics", "", 200},
       }) {
    INFO(c.method << " " << c.path << " " << c.body);
    HttpReply r = rig.call(c.method, c.path, c.body);
    INFO(r.body);
    CHECK(r.status == c.status);
    if (r.status >= 400 && std::string(c.path).rfind("/v2/models/fashion/versions/2/ready", 0) != 0)
      CHECK(json::parse(r.body).contains("error"));
  }

  // v2 infer, JSON and binary, equal to v1.
  std::vector<float> input(784);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 255) / 255.f;
  const std::vector<float> want = reference(rig.base + "/1", input);
  json req{{"inputs", {{{"name", "input"}, {"shape", {1, 28, 28, 1}}, {"datatype", "FP32"}, {"data", input}}}},
           {"id", "r1"}};
  HttpReply r = rig.call("POST", "/v2/models/fashion/infer", req.dump());
  REQUIRE(r.status == 200);
  json out = json::parse(r.body);
  CHECK(out["id"] == "r1");
  CHECK(out["model_version"] == "1");
  CHECK(out["outputs"][0]["shape"] == json({1, 10}));
  for (int c = 0; c < 10; ++c) CHECK(out["outputs"][0]["data"][c].get<float>() == Approx(want[c]).margin(1e-6));

  json header{{"inputs", {{{"name", "input"}, {"shape", {1, 28, 28, 1}}, {"datatype", "FP32"},
                           {"parameters", {{"binary_data_size", 784 * 4}}}}}},
              {"parameters", {{"binary_data_output", true}}}};
  HttpRequest binary{"POST", "/v2/models/fashion/infer", {}, header.dump()};
  binary.headers["inference-header-content-length"] = std::to_string(binary.body.size());
  binary.body.append(reinterpret_cast<const char*>(input.data()), input.size() * 4);
  r = rig.rest->handle(binary, Clock::now());
  REQUIRE(r.status == 200);
  size_t json_len = 0;
  for (auto& [k, v] : r.headers)
    if (k == "Inference-Header-Content-Length") json_len = std::stoul(v);
  REQUIRE(json_len > 0);
  REQUIRE(r.body.size() == json_len + 40);
  std::vector<float> got(10);
  std::memcpy(got.data(), r.body.data() + json_len, 40);
  for (int c = 0; c < 10; ++c) CHECK(got[c] == Approx(want[c]).margin(1e-6));
  binary.headers["inference-header-content-length"] = "999999";
  CHECK(rig.rest->handle(binary, Clock::now()).status == 400);

  // Too many rows, an expired deadline (not computed), and the metrics that count both.
  CHECK(rig.call("POST", "/v1/models/fashion:predict", json{{"instances", json(101, json(28, json(28, {0.f})))}}.dump())
            .status == 400);
  PredictCall late;
  late.model.name = "fashion";
  late.shape = {1, 28, 28, 1};
  late.values = input;
  late.deadline = Clock::now() - std::chrono::milliseconds(1);
  CHECK(code_of([&] { rig.predictor->predict(late); }) == Code::DEADLINE_EXCEEDED);
  const std::string metrics = rig.call("GET", "/monitoring/prometheus/metrics").body;
  CHECK_THAT(metrics, Catch::Contains(":tensorflow:serving:request_count{"));
  CHECK_THAT(metrics, Catch::Contains("status=\"INVALID_ARGUMENT\""));
  // Rows computed: the one-row v1 predict and the two v2 infers; not the late one.
  CHECK_THAT(metrics, Catch::Contains(":tandem:serving:rows_computed{model_name=\"fashion\",version=\"1\"} 3"));
}

TEST_CASE("serve: batching gives every request exactly its own rows, padded batches, bounded queues", "[cpu][serve]") {
  BatchingOptions o;
  o.max_batch_size = 8;
  o.batch_timeout_micros = 2000;
  o.max_enqueued_batches = 100;
  o.num_batch_threads = 2;
  o.allowed_batch_sizes = {2, 4, 8};
  o.validate();
  // Row r of a batch -> (value * 10 + 1, batch size): proves row order and shows the padded size.
  std::mutex mu;
  std::vector<int64_t> sizes;
  std::atomic<int64_t> computed{0}, padding{0};
  BatchQueue q(
      o, 1, 2,
      [&](const float* in, int64_t rows, float* out) {
        for (int64_t r = 0; r < rows; ++r) {
          out[2 * r] = in[r] * 10 + 1;
          out[2 * r + 1] = static_cast<float>(rows);
        }
        std::lock_guard<std::mutex> lock(mu);
        sizes.push_back(rows);
      },
      [&](const BatchStats& s) {
        computed += s.rows;
        padding += s.padded_rows - s.rows;
        CHECK(s.padded_rows == o.padded_size(s.rows));
        CHECK(s.queue_micros.size() == static_cast<size_t>(s.tasks));
      });
  std::vector<std::thread> clients;
  std::atomic<int> wrong{0};
  int64_t sent = 0;
  for (int c = 0; c < 6; ++c) {
    const int64_t rows = 1 + c % 5;  // 1..5 rows: most batches need padding
    sent += rows * 20;
    clients.emplace_back([&, c, rows] {
      for (int i = 0; i < 20; ++i) {
        std::vector<float> in(static_cast<size_t>(rows)), out(static_cast<size_t>(rows * 2));
        for (int64_t r = 0; r < rows; ++r) in[r] = static_cast<float>(c * 1000 + i * 10 + r);
        q.run(in.data(), rows, out.data(), Clock::time_point::max());
        for (int64_t r = 0; r < rows; ++r)
          if (out[2 * r] != in[r] * 10 + 1 || out[2 * r + 1] < rows) ++wrong;
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(wrong == 0);
  CHECK(computed == sent);
  {
    std::lock_guard<std::mutex> lock(mu);
    for (int64_t s : sizes) CHECK((s == 2 || s == 4 || s == 8));
    CHECK(sizes.size() < static_cast<size_t>(6 * 20));  // requests were batched together
  }
  CHECK(padding > 0);

  std::vector<float> big(9), big_out(18);
  CHECK(code_of([&] { q.run(big.data(), 9, big_out.data(), Clock::time_point::max()); }) == Code::INVALID_ARGUMENT);
}

TEST_CASE("serve: a full batch queue answers UNAVAILABLE at once; expired requests are never computed", "[cpu][serve]") {
  BatchingOptions o;
  o.max_batch_size = 4;
  o.max_enqueued_batches = 1;
  o.num_batch_threads = 1;
  std::mutex gate;
  gate.lock();  // the first batch blocks in compute until released
  std::atomic<int64_t> computed{0};
  std::atomic<bool> first{true};
  BatchQueue q(
      o, 1, 1,
      [&](const float* in, int64_t rows, float* out) {
        if (first.exchange(false)) std::lock_guard<std::mutex> wait(gate);
        for (int64_t r = 0; r < rows; ++r) out[r] = in[r];
        computed += rows;
      },
      nullptr);
  std::vector<float> in(4, 1.f), out(4);
  std::thread busy([&] { q.run(in.data(), 4, out.data(), Clock::time_point::max()); });
  while (!first) std::this_thread::yield();  // wait until the batch is computing
  for (int i = 0; i < 200 && first; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // One batch fits the queue; this one waits, with a deadline that passes while it waits.
  std::vector<float> in2(3, 2.f), out2(3);
  std::atomic<int> late_code{-1};
  std::thread late([&] {
    late_code = static_cast<int>(
        code_of([&] { q.run(in2.data(), 3, out2.data(), Clock::now() + std::chrono::milliseconds(50)); }));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // The queue now holds one batch's worth of rows: another batch does not fit.
  std::vector<float> in3(2, 3.f), out3(2);
  const auto t0 = Clock::now();
  CHECK(code_of([&] { q.run(in3.data(), 2, out3.data(), Clock::time_point::max()); }) == Code::UNAVAILABLE);
  CHECK(Clock::now() - t0 < std::chrono::milliseconds(100));
  late.join();
  CHECK(late_code == static_cast<int>(Code::DEADLINE_EXCEEDED));
  gate.unlock();
  busy.join();
  CHECK(computed == 4);  // the expired request's 3 rows never ran
  CHECK(code_of([&] { q.run(in3.data(), 2, out3.data(), Clock::time_point::max()); }) == Code::OK);
  CHECK(computed == 6);
}
TEST_CASE("serve: replicas of one version run at once and answer as one does", "[cpu][serve]") {
  test::TempDir tmp;
  const std::string dir = tmp / "1";
  write_version(dir, 11);
  for (int batching = 0; batching < 2; ++batching) {
    ServableOptions o;
    o.threads = 2;
    o.max_batch = 16;
    o.replicas = 2;
    o.batching = batching == 1;
    o.batch.max_batch_size = 8;
    o.batch.batch_timeout_micros = 500;
    o.batch.num_batch_threads = 2;
    INFO("batching " << batching);
    auto s = Servable::load("tiny", 1, dir, o);
    CHECK(s->replicas() == 2);
    std::atomic<int> wrong{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c)
      clients.emplace_back([&, c] {
        for (int i = 0; i < 25; ++i) {
          std::vector<float> in(784);
          for (size_t k = 0; k < in.size(); ++k) in[k] = static_cast<float>((k * 7 + c * 31 + i) % 256) / 255.f;
          std::vector<float> out(10);
          s->infer(in.data(), 1, out.data(), Clock::now() + std::chrono::seconds(30));
          const std::vector<float> want = reference(dir, in);
          for (int k = 0; k < 10; ++k)
            if (std::abs(out[k] - want[k]) > 1e-6f) ++wrong;
        }
      });
    for (auto& t : clients) t.join();
    CHECK(wrong == 0);
  }
  // A replica needs a compute thread: one thread means one replica.
  ServableOptions one;
  one.threads = 1;
  one.replicas = 4;
  CHECK(Servable::load("tiny", 1, dir, one)->replicas() == 1);
}
TEST_CASE("serve: a version's batching_params.pbtxt replaces the server's batching parameters", "[cpu][serve]") {
  test::TempDir tmp;
  const std::string plain = tmp / "1", own = tmp / "2", bad = tmp / "3";
  for (const std::string& d : {plain, own, bad}) write_version(d, 5);
  test::write_bytes(own + "/" + kBatchingParamsFileName, "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\n");
  test::write_bytes(bad + "/" + kBatchingParamsFileName, "max_batch_size { value: 4 }\nmax_batch_sizes: 3\n");
  ServableOptions o;
  o.threads = 1;
  o.batching = true;
  o.per_model_batching = true;
  o.batch.max_batch_size = 8;
  std::vector<float> in(6 * 784, 0.5f), out(6 * 10);
  auto deadline = [] { return Clock::now() + std::chrono::seconds(30); };
  auto s = Servable::load("tiny", 1, plain, o);  // no file: the server's parameters
  CHECK(code_of([&] { s->infer(in.data(), 6, out.data(), deadline()); }) == Code::OK);
  s = Servable::load("tiny", 2, own, o);  // its own: at most 4 rows
  CHECK(code_of([&] { s->infer(in.data(), 4, out.data(), deadline()); }) == Code::OK);
  CHECK(code_of([&] { s->infer(in.data(), 5, out.data(), deadline()); }) == Code::INVALID_ARGUMENT);
  try {
    Servable::load("tiny", 3, bad, o);
    FAIL("a version with a malformed batching_params.pbtxt loaded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(kBatchingParamsFileName) && Catch::Contains("max_batch_sizes"));
  }
  o.per_model_batching = false;  // without the flag the file is not read
  s = Servable::load("tiny", 2, own, o);
  CHECK(code_of([&] { s->infer(in.data(), 6, out.data(), deadline()); }) == Code::OK);
}
#endif  // TANDEM_HAVE_SERVE

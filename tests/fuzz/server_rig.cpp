#include "server_rig.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "fuzz_target.h"

namespace tandem::fuzz {

using nlohmann::json;
using namespace tandem::serve;

ServerRig::ServerRig(bool batching) {
  const std::string base = (scratch_dir() / (batching ? "server-batching" : "server-plain") / "m").string();
  write_tiny_version(base + "/1", 1);
  write_tiny_version(base + "/2", 2);
  ManagerOptions o;
  o.servable.max_batch = 16;
  o.servable.replicas = 2;
  o.servable.threads = 2;
  if (batching) {
    o.servable.batching = true;
    o.servable.batch.max_batch_size = 16;
    o.servable.batch.allowed_batch_sizes = {4, 16};
    o.servable.batch.batch_timeout_micros = 200;
    o.servable.batch.num_batch_threads = 2;
  }
  manager = std::make_unique<ModelManager>(o);
  ModelSource m;
  m.name = "m";
  m.base_path = base;
  m.policy.kind = VersionPolicy::Kind::All;
  m.labels["stable"] = 1;
  const Status s = manager->reload({m});
  if (!s.ok()) {
    std::fprintf(stderr, "fuzz server rig: %s\n", s.message.c_str());
    std::abort();
  }
  predictor = std::make_unique<Predictor>(*manager, &metrics, Limits{64});
  RestOptions ro;
  ro.monitoring.prometheus = true;
  rest = std::make_unique<RestHandler>(*manager, *predictor, &metrics, ro);

  good_row.resize(kTinyRowElems);
  for (int i = 0; i < kTinyRowElems; ++i) good_row[i] = static_cast<float>(i % 7) / 7.0f;
  PredictCall call;
  call.model.name = "m";
  call.shape = {1, 6, 6, 1};
  call.values = good_row;
  good_probabilities = predictor->predict(call).probabilities;
  good_body = json{{"instances", {tiny_image_json(good_row)}}}.dump();
}

void ServerRig::check_still_serving(const char* after) const {
  const HttpReply r = rest->handle(HttpRequest{"POST", "/v1/models/m:predict", {}, good_body}, Clock::now());
  bool ok = r.status == 200;
  if (ok) {
    const json body = json::parse(r.body, nullptr, false);
    ok = body.is_object() && body.contains("predictions") && body["predictions"].size() == 1;
    for (int c = 0; ok && c < kTinyClasses; ++c)
      ok = std::fabs(body["predictions"][0][c].get<double>() - good_probabilities[c]) < 1e-6;
  }
  if (!ok) {
    std::fprintf(stderr, "\n==fuzz== the server stopped answering a good request correctly after %s: %d %s\n",
                 after, r.status, r.body.c_str());
    std::abort();
  }
}

const ServerRig& plain_rig() {
  static const ServerRig rig(false);
  return rig;
}
const ServerRig& batching_rig() {
  static const ServerRig rig(true);
  return rig;
}

}  // namespace tandem::fuzz

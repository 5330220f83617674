// The server of the server targets: model "m" (versions 1 and 2 of the tiny model, label "stable"
// on 1) behind a ModelManager, a Predictor and the REST handler, once without and once with
// batching, as `tandem serve` builds them. A known-good request after every fuzz input checks that
// the server still answers correctly.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "serve/metrics.h"
#include "serve/model_manager.h"
#include "serve/predictor.h"
#include "serve/rest_api.h"

namespace tandem::fuzz {

struct ServerRig {
  explicit ServerRig(bool batching);
  serve::ServerMetrics metrics;
  std::unique_ptr<serve::ModelManager> manager;
  std::unique_ptr<serve::Predictor> predictor;
  std::unique_ptr<serve::RestHandler> rest;
  // A row of the good request, the request's body, and what version 2 answers for it.
  std::vector<float> good_row, good_probabilities;
  std::string good_body;
  // Sends the good request through REST v1 and checks the answer; aborts naming `after` if not.
  void check_still_serving(const char* after) const;
};

// Both rigs, built on first use.
const ServerRig& plain_rig();
const ServerRig& batching_rig();

}  // namespace tandem::fuzz

// Small helpers shared by the engine tests: synthetic datasets and model construction.
#pragma once
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/model.h"
#include "engine/rng.h"
#include "engine/trainer.h"
#include "kernels/backends.h"

namespace tandem::test {

// `count` random images of shape (h, w, c) with labels in [0, classes); seeded.
inline Dataset synthetic_dataset(int64_t count, int h, int w, int c, int classes, uint64_t seed) {
  Dataset d;
  d.sample_shape = Shape{h, w, c};
  d.count = count;
  d.num_classes = classes;
  CounterRng rng(seed, 7);
  d.images.resize(static_cast<size_t>(count * h * w * c));
  for (auto& p : d.images) p = static_cast<uint8_t>(rng.below(256));
  d.labels.resize(static_cast<size_t>(count));
  for (auto& l : d.labels) l = static_cast<uint8_t>(rng.below(static_cast<uint64_t>(classes)));
  return d;
}

// `n` floats uniform in [-1, 1); seeded.
inline std::vector<float> random_floats(size_t n, uint64_t seed, uint64_t stream = 1) {
  CounterRng r(seed, stream);
  std::vector<float> v(n);
  for (auto& x : v) x = 2.f * r.uniform() - 1.f;
  return v;
}

// The training tests' optimizers: SGD with lr 0.05 and momentum 0.9, or Adam with lr 0.01.
inline OptimizerConfig test_optimizer(const std::string& name) {
  OptimizerConfig opt;
  opt.name = name;
  opt.lr = name == "sgd" ? 0.05 : 0.01;
  opt.momentum = name == "sgd" ? 0.9 : 0.0;
  return opt;
}

// Trains `m` on `data` with `replicas` CPU replicas of `threads` threads each; the final weights,
// and whether every replica ended with the same digest.
struct Trained {
  std::vector<float> weights;
  bool replicas_agree = false;
};
// `central_storage`: the weights and the update on a one-thread host backend of their own.
inline Trained train_cpu_replicas(const Model& m, int replicas, int threads, const TrainOptions& options,
                                  const OptimizerConfig& optimizer, const Dataset& data, bool central_storage = false) {
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (int i = 0; i < replicas; ++i) {
    owned.push_back(make_cpu_backend(threads));
    backends.push_back(owned.back().get());
  }
  TrainOptions o = options;
  std::unique_ptr<Backend> host;
  if (central_storage) {
    host = make_cpu_backend(1);
    o.central_storage = host.get();
  }
  Trainer t(m, backends, o, optimizer);
  t.fit(data, nullptr, {});
  Trained out;
  const auto digests = t.replica_digests();
  out.replicas_agree = true;
  for (const auto& d : digests) out.replicas_agree = out.replicas_agree && d == digests[0];
  out.weights = t.weights();
  return out;
}

// The geometry of a Conv2D layer, "same" padding as TensorFlow pads it (the odd extra row or
// column at the end) or "valid".
inline ConvGeometry conv_geometry(int n, int h, int w, int c, int kh, int kw, int k, int sh, int sw, bool same) {
  ConvGeometry g;
  g.n = n;
  g.h = h;
  g.w = w;
  g.c = c;
  g.kh = kh;
  g.kw = kw;
  g.k = k;
  g.sh = sh;
  g.sw = sw;
  if (same) {  // as TensorFlow: the odd extra padding row/column goes at the end
    g.oh = (h + sh - 1) / sh;
    g.ow = (w + sw - 1) / sw;
    g.pad_top = std::max((g.oh - 1) * sh + kh - h, 0) / 2;
    g.pad_left = std::max((g.ow - 1) * sw + kw - w, 0) / 2;
  } else {
    g.oh = (h - kh) / sh + 1;
    g.ow = (w - kw) / sw + 1;
  }
  return g;
}

inline Model model_from(const std::string& json_text) {
  return Model::from_spec(nlohmann::json::parse(json_text), "test spec");
}

}  // namespace tandem::test

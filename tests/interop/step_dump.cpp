// tandem_step_dump: one training step of a model on a fixed batch, with everything a reference
// framework needs to repeat it: the batch, the initial weights, the loss and the updated weights
// (as .npy files). Used by keras_step_check.py.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/dataset.h"
#include "engine/errors.h"
#include "engine/rng.h"
#include "engine/trainer.h"
#include "kernels/backends.h"

using namespace tandem;
namespace fs = std::filesystem;

namespace {

void write_npy(const fs::path& path, const void* data, size_t bytes, const char* descr, const Shape& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.rank(); ++i) dims += std::to_string(shape[i]) + (shape.rank() == 1 || i + 1 < shape.rank() ? "," : "");
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f) throw_io("cannot write " + path.string());
}

void dump_weights(const Model& m, const std::vector<float>& arena, const fs::path& dir) {
  fs::create_directories(dir);
  for (const auto& t : m.to_tensors(arena)) {
    std::string file = t.name;
    for (char& c : file)
      if (c == '/') c = '.';
    write_npy(dir / (file + ".npy"), t.values.data(), t.values.size() * 4, "<f4", t.shape);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "mlp", out, data_dir;
  int64_t batch = 32;
  double lr = 0.1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_name = v;
    else if (k == "--out") out = v;
    else if (k == "--data") data_dir = v;
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--lr") lr = std::stod(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  try {
    nlohmann::json spec = (model_name == "mlp" || model_name == "cnn") ? Model::preset(model_name)
                                                                        : nlohmann::json::parse(std::ifstream(model_name));
    for (auto& l : spec["layers"])
      if (l["type"] == "Dropout") l["rate"] = 0.0;  // the reference check runs without dropout
    Model model = Model::from_spec(spec, model_name);
    Dataset data;
    if (!data_dir.empty()) {
      data = load_fashion_mnist(data_dir).train.slice(0, batch);
    } else {
      data.sample_shape = model.input_shape();
      data.count = batch;
      data.num_classes = model.num_classes();
      CounterRng rng(1, 2);
      data.images.resize(static_cast<size_t>(batch * data.sample_elems()));
      for (auto& p : data.images) p = static_cast<uint8_t>(rng.below(256));
      data.labels.resize(static_cast<size_t>(batch));
      for (auto& l : data.labels) l = static_cast<uint8_t>(rng.below(static_cast<uint64_t>(data.num_classes)));
    }
    auto backend = make_cpu_backend(1);
    Replica rep(model, *backend, batch);
    std::vector<float> before = model.initial_weights(123);
    rep.set_weights(before);
    std::vector<int32_t> index(static_cast<size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) index[i] = static_cast<int32_t>(i);
    ResidentData rd{data.images.data(), data.labels.data(), data.count, data.sample_elems(), data.num_classes};
    rep.load_batch(rd, index.data(), batch, false);
    StepContext ctx;
    ctx.backend = backend.get();
    ctx.batch = batch;
    ctx.training = true;
    rep.forward(ctx);
    rep.loss(batch, 1.f / float(batch), false, true);
    rep.backward(ctx);
    OptimizerConfig oc;
    oc.lr = lr;
    Optimizer opt(oc, *backend, model.trainable_floats());
    opt.apply(rep.params(), rep.grads(), 0);
    double loss_sum, correct;
    rep.read_metrics(&loss_sum, &correct);

    fs::create_directories(out);
    std::vector<float> x(static_cast<size_t>(batch * data.sample_elems()));
    for (size_t i = 0; i < x.size(); ++i) x[i] = data.images[i] / 255.0f;
    std::vector<int32_t> y(data.labels.begin(), data.labels.end());
    write_npy(fs::path(out) / "x.npy", x.data(), x.size() * 4, "<f4", data.sample_shape.with_batch(batch));
    write_npy(fs::path(out) / "y.npy", y.data(), y.size() * 4, "<i4", Shape{batch});
    dump_weights(model, before, fs::path(out) / "before");
    dump_weights(model, rep.weights(), fs::path(out) / "after");
    nlohmann::json result{{"loss", loss_sum / double(batch)}, {"lr", lr}, {"spec", model.spec()}};
    std::ofstream(fs::path(out) / "result.json") << result.dump(2);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "tandem_step_dump: %s\n", e.what());
    return 2;
  }
}

// Backend conformance (tests/kernels/conformance.h): whole models: training steps of the presets, Trainer steps,
// dropout masks.
#include "conformance.h"

using namespace tandem;
using namespace tandem::conformance;

namespace {

// ---- whole models ---------------------------------------------------------------------------------

// A dataset made resident in a backend's memory.
struct Resident {
  DevBuf images, labels;
  ResidentData data;
  Resident(Backend& b, const Dataset& d) : images(b, d.images.size()), labels(b, d.labels.size()) {
    images.put(d.images);
    labels.put(d.labels);
    data.images = images.u8();
    data.labels = labels.u8();
    data.count = d.count;
    data.sample_elems = d.sample_elems();
    data.num_classes = d.num_classes;
  }
};

void expect_rel(const std::vector<float>& ref, const std::vector<float>& got, double tol, const std::string& what) {
  REQUIRE(ref.size() == got.size());
  double e = rel_norm_error(ref, got);
  INFO(what << ": relative error (2-norm) " << e << ", tolerance " << tol);
  CHECK(e <= tol);
}

// One training step (forward, loss, backward, optimizer) of `model` on both backends from the
// same weights and batch; compares outputs, metrics, every gradient tensor and the new weights.
void check_model_step(Backend& ref, Backend& dut, Rand& r, const Model& model, const Dataset& data, int64_t batch,
                      const OptimizerConfig& opt, bool one_hot, double tol) {
  const uint64_t wseed = r.rng.below(1000000);
  std::vector<float> init = model.initial_weights(wseed);
  Resident rd_ref(ref, data), rd_dut(dut, data);
  Replica a(model, ref, batch), b(model, dut, batch);
  a.set_weights(init);
  b.set_weights(init);
  std::vector<int32_t> index(batch);
  for (auto& i : index) i = r.range(0, static_cast<int>(data.count) - 1);
  StepContext ctx;
  ctx.batch = batch;
  ctx.training = true;
  ctx.seed = r.rng.below(1000);
  ctx.step = r.rng.below(1000);
  ctx.first_sample = r.rng.below(1000);
  const int classes = model.num_classes();
  std::vector<float> out[2], grads[2];
  double loss[2], correct[2];
  Replica* reps[2] = {&a, &b};
  Resident* res[2] = {&rd_ref, &rd_dut};
  for (int i = 0; i < 2; ++i) {
    Replica& rep = *reps[i];
    ctx.backend = &rep.backend();
    rep.reset_metrics();
    rep.load_batch(res[i]->data, index.data(), batch, one_hot);
    const float* y = rep.forward(ctx);
    out[i].resize(size_t(batch) * classes);
    rep.backend().download(out[i].data(), y, out[i].size() * sizeof(float));
    rep.loss(batch, 1.f / float(batch), one_hot, true);
    rep.backward(ctx);
    rep.read_metrics(&loss[i], &correct[i]);
    grads[i].resize(model.trainable_floats());
    rep.backend().download(grads[i].data(), rep.grads(), grads[i].size() * sizeof(float));
  }
  INFO("model " << model.name() << " batch " << batch << " weight seed " << wseed << " step " << ctx.step);
  expect_rel(out[0], out[1], tol, "outputs (logits)");
  INFO("loss " << loss[0] << " vs " << loss[1] << ", correct " << correct[0] << " vs " << correct[1]);
  CHECK(std::fabs(loss[0] - loss[1]) <= tol * std::fabs(loss[0]) + 1e-6);
  CHECK(std::fabs(correct[0] - correct[1]) <= 1);
  auto slice = [&](int which, const ParamSlot& p) {
    const auto begin = grads[which].begin() + static_cast<std::ptrdiff_t>(p.offset);
    return std::vector<float>(begin, begin + p.shape.numel());
  };
  const auto& layers = model.layers();
  for (size_t i = 0; i < model.params().size(); ++i) {
    const auto& p = model.params()[i];
    if (!p.spec.trainable) continue;
    const bool feeds_batchnorm =
        size_t(p.layer) + 1 < layers.size() && layers[size_t(p.layer) + 1]->type() == "BatchNormalization";
    if (feeds_batchnorm && p.index == 1) {
      // A bias just before BatchNormalization has a zero gradient (the batch mean removes it):
      // both backends leave only rounding noise, far below the same layer's kernel gradient.
      const auto& kernel = model.params()[i - 1];
      REQUIRE(kernel.layer == p.layer);
      auto norm2 = [](const std::vector<float>& v) {
        double ss = 0;
        for (float x : v) ss += double(x) * x;
        return std::sqrt(ss);
      };
      for (int which : {0, 1}) {
        const double noise = norm2(slice(which, p)), scale = norm2(slice(which, kernel));
        INFO("gradient of " << p.name << " (zero before BatchNormalization) on backend " << which << ": 2-norm "
                            << noise << ", its kernel's " << scale);
        CHECK(noise <= 1e-4 * scale);
      }
      continue;
    }
    expect_rel(slice(0, p), slice(1, p), 10 * tol, "gradient of " + p.name);
  }
  // BatchNormalization's moving statistics (non-trainable) moved identically.
  expect_rel(a.weights(), b.weights(), tol, "arena after forward (moving statistics)");
  Optimizer oa(opt, ref, model.trainable_floats()), ob(opt, dut, model.trainable_floats());
  for (int step = 0; step < 2; ++step) {
    oa.apply(a.params(), a.grads(), step);
    ob.apply(b.params(), b.grads(), step);
  }
  expect_rel(a.weights(), b.weights(), tol, "weights after two updates with the same gradients");
}

Dataset image_data(int64_t count, int h, int w, int c, int classes, Rand& r) {
  return test::synthetic_dataset(count, h, w, c, classes, r.rng.below(1000000));
}

void check_mlp_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = Model::from_name_or_file("mlp");
  OptimizerConfig sgd;
  sgd.lr = 0.05;
  sgd.momentum = 0.9;
  check_model_step(ref, dut, r, model, image_data(300, 28, 28, 1, 10, r), 64, sgd, false, 1e-5);
}

void check_cnn_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = Model::from_name_or_file("cnn");
  OptimizerConfig adam;
  adam.name = "adam";
  adam.lr = 1e-3;
  check_model_step(ref, dut, r, model, image_data(100, 28, 28, 1, 10, r), 16, adam, false, 1e-4);
}

void check_bn_model_step(Backend& ref, Backend& dut, Rand& r) {
  Model model = test::model_from(R"({"name": "bn", "input_shape": [12, 10, 3], "layers": [
      {"type": "Conv2D", "filters": 8, "kernel_size": [3, 2], "strides": 2, "padding": "same"},
      {"type": "BatchNormalization"}, {"type": "ReLU"},
      {"type": "MaxPool2D", "pool_size": 3, "strides": 1, "padding": "same"},
      {"type": "Conv2D", "filters": 6, "kernel_size": 2, "padding": "same", "activation": "relu"},
      {"type": "Flatten"}, {"type": "Dense", "units": 16}, {"type": "BatchNormalization", "epsilon": 0.01},
      {"type": "Dropout", "rate": 0.3}, {"type": "Dense", "units": 5, "activation": "softmax"}]})");
  OptimizerConfig sgd;
  sgd.lr = 0.1;
  sgd.momentum = 0.5;
  sgd.nesterov = true;
  check_model_step(ref, dut, r, model, image_data(64, 12, 10, 3, 5, r), 24, sgd, true, 1e-4);
}

// Two Trainer steps (gather from resident data, dropout keyed by step, update) on each backend.
void check_trainer_steps(Backend& ref, Backend& dut, Rand& r) {
  for (const char* preset : {"mlp", "cnn"}) {
    Model model = Model::from_name_or_file(preset);
    Dataset data = image_data(64, 28, 28, 1, 10, r);
    TrainOptions o;
    o.epochs = 1;
    o.batch_size = 32;
    o.seed = r.rng.below(1000);
    OptimizerConfig opt;
    opt.lr = 0.05;
    opt.momentum = 0.9;
    Trainer ta(model, {&ref}, o, opt), tb(model, {&dut}, o, opt);
    auto la = ta.fit(data, nullptr, {});
    auto lb = tb.fit(data, nullptr, {});
    INFO("preset " << preset << " seed " << o.seed);
    REQUIRE(la.size() == 1);
    REQUIRE(lb.size() == 1);
    CHECK(std::fabs(la[0].loss - lb[0].loss) <= 1e-4 * std::fabs(la[0].loss));
    expect_rel(ta.weights(), tb.weights(), 1e-4, std::string("weights after two steps of ") + preset);
  }
}

// Dropout followed by an identity Dense layer: the model's output is the dropout layer's output
// exactly (products with 1 and 0 are exact), so the masks must agree bit for bit.
void check_dropout_model(Backend& ref, Backend& dut, Rand& r) {
  Model model = test::model_from(R"({"input_shape": [8, 8, 3], "layers": [{"type": "Flatten"},
      {"type": "Dropout", "rate": 0.4}, {"type": "Dense", "units": 192, "activation": "softmax"}]})");
  Dataset data = image_data(40, 8, 8, 3, static_cast<int>(model.num_classes()), r);
  std::vector<float> w = model.initial_weights(1);
  for (const auto& p : model.params()) {
    std::fill(w.begin() + p.offset, w.begin() + p.offset + p.shape.numel(), 0.f);
    if (p.shape.rank() == 2)
      for (int64_t i = 0; i < p.shape[0]; ++i) w[p.offset + i * p.shape[1] + i] = 1.f;
  }
  Resident rd_ref(ref, data), rd_dut(dut, data);
  Replica a(model, ref, 16), b(model, dut, 16);
  a.set_weights(w);
  b.set_weights(w);
  std::vector<int32_t> index(16);
  for (auto& i : index) i = r.range(0, 39);
  StepContext ctx;
  ctx.batch = 16;
  ctx.training = true;
  ctx.seed = r.rng.below(1u << 30);
  ctx.step = r.rng.below(1u << 20);
  ctx.first_sample = r.rng.below(1000);
  std::vector<float> out[2];
  Replica* reps[2] = {&a, &b};
  Resident* res[2] = {&rd_ref, &rd_dut};
  for (int i = 0; i < 2; ++i) {
    ctx.backend = &reps[i]->backend();
    reps[i]->load_batch(res[i]->data, index.data(), 16, false);
    const float* y = reps[i]->forward(ctx);
    out[i].resize(16 * 192);
    reps[i]->backend().download(out[i].data(), y, out[i].size() * 4);
  }
  expect_close(out[0], out[1], kExact, "dropout layer output");
  size_t zeros = 0;
  for (float v : out[0]) zeros += v == 0.f;
  CHECK(double(zeros) / double(out[0].size()) > 0.3);  // the mask did drop (rate 0.4)
}

}  // namespace

CONFORMANCE_CASES("model: one training step of the mlp preset", check_mlp_step)
CONFORMANCE_CASES("model: one training step of the cnn preset", check_cnn_step)
CONFORMANCE_CASES("model: conv + batchnorm + pool + dropout, one-hot targets", check_bn_model_step)
CONFORMANCE_CASES("model: two Trainer steps of mlp and cnn", check_trainer_steps)
CONFORMANCE_CASES("model: dropout masks are identical", check_dropout_model)

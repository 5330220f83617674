// TensorFlow Lite post-training quantization (export/tflite_quantize.h): the float reference
// interpreter against Tandem's own forward pass, float16 rounding over every half value, TF's
// asymmetric int8 rule, the graph each mode writes (types, per-channel scales, bias scales, op
// versions, the edges), the errors, and what describe_tflite reads back and refuses.
// (Accuracy in LiteRT and tf.lite, and against TF's converter: tests/interop/tflite_quant_check.py.)
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/errors.h"
#include "engine/model.h"
#include "engine/replica.h"
#include "export/exporter.h"
#include "export/tflite_quantize.h"
#include "export/tflite_writer.h"
#include "export_fixtures.h"
#include "kernels/backends.h"
#include "temp_dir.h"
#include "test_support.h"

using nlohmann::json;
using tandem::Error;
using tandem::ErrorKind;
using tandem::Model;
using tandem::NamedTensor;
using namespace tandem::test;
namespace tfl = tandem::tfl;

namespace {

// A model with an unfoldable BatchNormalization (MUL + ADD) and a Dense big enough for dynamic mode.
Model quant_model() {
  return Model::from_spec(json::parse(R"({"name": "q", "input_shape": [12, 12, 1], "layers": [
      {"type": "Conv2D", "name": "c1", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
      {"type": "BatchNormalization", "name": "bn"},
      {"type": "MaxPool2D", "name": "p", "pool_size": 2},
      {"type": "Conv2D", "name": "c2", "filters": 16, "kernel_size": 3, "strides": 2, "padding": "valid",
       "activation": "relu"},
      {"type": "Flatten", "name": "f"},
      {"type": "Dense", "name": "d1", "units": 80, "activation": "relu"},
      {"type": "Dense", "name": "out", "units": 10, "activation": "softmax"}]})"),
                          "test spec");
}

// Images in [0, 1] with both ends present (as x / 255 of real pixels).
std::vector<float> images(const Model& m, int64_t n, uint64_t seed) {
  std::vector<float> x = random_floats(static_cast<size_t>(n * m.input_shape().numel()), seed);
  for (float& v : x) v = std::fabs(v) - std::floor(std::fabs(v));
  x[0] = 0.f;
  x[1] = 1.f;
  return x;
}

// Tandem's own probabilities for `x` on the CPU backend.
std::vector<float> tandem_forward(const Model& m, const std::vector<NamedTensor>& w, const std::vector<float>& x,
                                  int64_t n) {
  auto backend = tandem::make_cpu_backend(1);
  tandem::Replica r(m, *backend, n);
  r.set_weights(m.from_tensors(w, "test weights"));
  r.load_input(x.data(), n);
  tandem::StepContext ctx;
  ctx.backend = backend.get();
  ctx.batch = n;
  ctx.want_probs = true;
  const float* y = r.forward(ctx);
  std::vector<float> out(static_cast<size_t>(n * m.num_classes()));
  backend->download(out.data(), y, out.size() * sizeof(float));
  return out;
}

float half_to_float(uint16_t h) {  // the test's own decoder
  const int e = (h >> 10) & 0x1f, f = h & 0x3ff;
  const float s = (h & 0x8000) ? -1.f : 1.f;
  if (e == 0) return s * std::ldexp(static_cast<float>(f), -24);
  if (e == 31) return f ? std::numeric_limits<float>::quiet_NaN() : s * std::numeric_limits<float>::infinity();
  return s * std::ldexp(static_cast<float>(f | 0x400), e - 25);
}

const tfl::Tensor& t_at(const tfl::Graph& g, int32_t i) {
  REQUIRE(i >= 0);
  REQUIRE(static_cast<size_t>(i) < g.tensors.size());
  return g.tensors[static_cast<size_t>(i)];
}

std::vector<const tfl::Operator*> ops_of(const tfl::Graph& g, int32_t code) {
  std::vector<const tfl::Operator*> out;
  for (const auto& op : g.operators)
    if (op.op == code) out.push_back(&op);
  return out;
}

tfl::QuantizeOptions int8_options(const Model& m, int64_t n, bool int8_io = false) {
  tfl::QuantizeOptions o;
  o.mode = tfl::QuantizeMode::Int8;
  o.int8_io = int8_io;
  o.calibration = images(m, n, 11);
  return o;
}

}  // namespace

TEST_CASE("tflite quantize: the float reference interpreter equals Tandem's forward pass", "[cpu][export]") {
  for (const Model& m : {all_layers_model(), quant_model()}) {
    INFO(m.name());
    const auto w = weights_of(m);
    const int64_t n = 37;  // crosses the interpreter's 32-sample chunks
    const std::vector<float> x = images(m, n, 3);
    const tfl::Graph g = tfl::build_graph(m, w);
    std::vector<tfl::Range> ranges;
    const std::vector<float> got = tfl::run_float(g, x, n, &ranges);
    const std::vector<float> ref = tandem_forward(m, w, x, n);
    REQUIRE(got.size() == ref.size());
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(got[i] - ref[i])));
    INFO("max |diff| " << worst);
    CHECK(worst <= 1e-5);
    // Ranges: the input's are the images' own, the output's are probabilities.
    CHECK(ranges[static_cast<size_t>(g.input)].min == 0.f);
    CHECK(ranges[static_cast<size_t>(g.input)].max == 1.f);
    CHECK(ranges[static_cast<size_t>(g.output)].min >= 0.f);
    CHECK(ranges[static_cast<size_t>(g.output)].max <= 1.f);
  }
}

TEST_CASE("tflite quantize: float16 rounding, every half value and the midpoints between them", "[cpu][export]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      CHECK((tfl::float_to_half(f) & 0x7c00) == 0x7c00);
      CHECK((tfl::float_to_half(f) & 0x3ff) != 0);  // stays a NaN
      continue;
    }
    if (tfl::float_to_half(f) != h && !(f == 0.f && (tfl::float_to_half(f) & 0x7fff) == 0)) FAIL("half " << h);
    // Between h and the next half up (same sign, finite): the midpoint goes to the even one, a hair
    // either side to the nearer.
    const uint32_t mag = h & 0x7fff;
    if (mag >= 0x7bff) continue;
    const float next = half_to_float(static_cast<uint16_t>(h + 1));
    const double mid = (static_cast<double>(f) + next) / 2;
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    if (tfl::float_to_half(static_cast<float>(mid)) != even) FAIL("midpoint above half " << h);
    const float below = std::nextafter(static_cast<float>(mid), f), above = std::nextafter(static_cast<float>(mid), next);
    if (static_cast<double>(below) != mid && tfl::float_to_half(below) != h) FAIL("below the midpoint above " << h);
    if (static_cast<double>(above) != mid && tfl::float_to_half(above) != h + 1) FAIL("above the midpoint above " << h);
  }
  CHECK(tfl::float_to_half(65519.f) == 0x7bff);  // rounds down to the largest half, 65504
  CHECK(tfl::float_to_half(65520.f) == 0x7c00);  // the midpoint to "65536": infinity
  CHECK(tfl::float_to_half(-1e10f) == 0xfc00);
  CHECK(tfl::float_to_half(std::ldexp(1.f, -26)) == 0);  // below half the smallest subnormal
}

TEST_CASE("tflite quantize: TF's asymmetric int8 parameters", "[cpu][export]") {
  auto p = tfl::asymmetric_int8(0.f, 1.f);
  CHECK(p.scale == Approx(1.0 / 255));
  CHECK(p.zero_point == -128);
  p = tfl::asymmetric_int8(2.f, 5.f);  // widened to [0, 5]: 0 stays exact
  CHECK(p.scale == Approx(5.0 / 255));
  CHECK(p.zero_point == -128);
  p = tfl::asymmetric_int8(-3.f, -1.f);  // [-3, 0]
  CHECK(p.scale == Approx(3.0 / 255));
  CHECK(p.zero_point == 127);
  p = tfl::asymmetric_int8(-1.f, 3.f);
  CHECK(p.scale == Approx(4.0 / 255));
  CHECK(p.zero_point == std::lround(-128 + 1.0 / (4.0 / 255)));  // -64.25 -> -64
  CHECK((-128 - p.zero_point) * p.scale == Approx(-1.0).margin(p.scale / 2));  // the ends map to -128 and 127
  CHECK((127 - p.zero_point) * p.scale == Approx(3.0).margin(p.scale / 2));
  p = tfl::asymmetric_int8(0.f, 0.f);  // an all-zero tensor
  CHECK(p.scale > 0.f);
  CHECK(p.zero_point == -128);
}

TEST_CASE("tflite quantize: float16 stores every float constant as FLOAT16 behind a DEQUANTIZE", "[cpu][export]") {
  const Model m = quant_model();
  const auto w = weights_of(m);
  const tfl::Graph f = tfl::build_graph(m, w);
  tfl::QuantizeOptions o;
  o.mode = tfl::QuantizeMode::Float16;
  const tfl::Graph g = tfl::quantize(f, o);
  size_t float_constants = 0;
  for (const auto& t : f.tensors) float_constants += t.buffer != 0 && t.type == tfl::FLOAT32;
  const auto deq = ops_of(g, tfl::DEQUANTIZE);
  REQUIRE(deq.size() == float_constants);
  for (size_t i = 0; i < deq.size(); ++i) {
    CHECK(&g.operators[i] == deq[i]);  // at the start, as TF writes them
    CHECK(deq[i]->version == 3);
    const tfl::Tensor& half = t_at(g, deq[i]->inputs[0]);
    CHECK(half.type == tfl::FLOAT16);
    CHECK(g.buffers[half.buffer].size() % 2 == 0);
    CHECK(t_at(g, deq[i]->outputs[0]).type == tfl::FLOAT32);
    CHECK(t_at(g, deq[i]->outputs[0]).buffer == 0);
    // The halves are the float values rounded.
    const std::vector<float> values = f.constant(deq[i]->inputs[0]);
    REQUIRE(g.buffers[half.buffer].size() == 2 * values.size());
    for (size_t k = 0; k < values.size(); ++k) {
      uint16_t h;
      std::memcpy(&h, &g.buffers[half.buffer][2 * k], 2);
      CHECK(half_to_float(h) == Approx(values[k]).epsilon(1e-3).margin(1e-7));
    }
  }
  for (const auto& t : g.tensors)
    if (t.buffer != 0) CHECK(t.type != tfl::FLOAT32);  // nothing left in float32
}

TEST_CASE("tflite quantize: dynamic quantizes the large weights per channel, hybrid kernels", "[cpu][export]") {
  const Model m = quant_model();
  const auto w = weights_of(m);
  const tfl::Graph f = tfl::build_graph(m, w);
  tfl::QuantizeOptions o;
  o.mode = tfl::QuantizeMode::Dynamic;
  const tfl::Graph g = tfl::quantize(f, o);
  int quantized = 0;
  for (size_t i = 0; i < g.operators.size(); ++i) {
    const tfl::Operator& op = g.operators[i];
    if (op.op != tfl::CONV_2D && op.op != tfl::FULLY_CONNECTED) {
      CHECK(op.version == 1);
      continue;
    }
    const tfl::Tensor& wt = t_at(g, op.inputs[1]);
    int64_t elements = 1;
    for (int32_t d : wt.shape) elements *= d;
    INFO(wt.name << " " << elements);
    CHECK(t_at(g, op.inputs[2]).type == tfl::FLOAT32);  // biases stay float
    if (elements < tfl::kDynamicMinElements) {
      CHECK(wt.type == tfl::FLOAT32);
      CHECK(op.version == 1);
      continue;
    }
    ++quantized;
    CHECK(wt.type == tfl::INT8);
    CHECK(op.version == (op.op == tfl::CONV_2D ? 5 : 12));
    CHECK(op.asymmetric_quantize_inputs == (op.op == tfl::FULLY_CONNECTED));
    REQUIRE(wt.quantization.scale.size() == static_cast<size_t>(wt.shape[0]));
    CHECK(wt.quantization.dimension == 0);
    // scale = max |w| / 127 per output channel, and every weight within half a step.
    const std::vector<float> ref = f.constant(op.inputs[1]);
    const size_t per = ref.size() / wt.quantization.scale.size();
    const std::string& q = g.buffers[wt.buffer];
    for (size_t c = 0; c < wt.quantization.scale.size(); ++c) {
      float mx = 0;
      for (size_t k = 0; k < per; ++k) mx = std::max(mx, std::fabs(ref[c * per + k]));
      CHECK(wt.quantization.scale[c] == Approx(mx / 127));
      CHECK(wt.quantization.zero_point[c] == 0);
      for (size_t k = 0; k < per; ++k) {
        const float back = static_cast<float>(static_cast<int8_t>(q[c * per + k])) * wt.quantization.scale[c];
        if (std::fabs(back - ref[c * per + k]) > wt.quantization.scale[c] * 0.5001f) FAIL("weight " << c * per + k);
      }
    }
  }
  CHECK(quantized == 2);  // c2 (16x3x3x8 = 1152) and d1 (80x144); c1 (72) and out (800) stay float
}

TEST_CASE("tflite quantize: int8 makes every activation int8, biases int32 at input x weight scale", "[cpu][export]") {
  const Model m = quant_model();
  const auto w = weights_of(m);
  const tfl::Graph f = tfl::build_graph(m, w);
  for (bool int8_io : {false, true}) {
    INFO("int8_io " << int8_io);
    const tfl::Graph g = tfl::quantize(f, int8_options(m, 120, int8_io));
    const tfl::Tensor& in = t_at(g, g.input);
    const tfl::Tensor& out = t_at(g, g.output);
    CHECK(in.name == "input");
    CHECK(out.name == "probabilities");
    if (int8_io) {
      CHECK(in.type == tfl::INT8);
      CHECK(out.type == tfl::INT8);
      CHECK(ops_of(g, tfl::QUANTIZE).empty());
      CHECK(ops_of(g, tfl::DEQUANTIZE).empty());
    } else {
      CHECK(in.type == tfl::FLOAT32);
      CHECK(in.quantization.empty());
      CHECK(out.type == tfl::FLOAT32);
      REQUIRE(g.operators.front().op == tfl::QUANTIZE);
      CHECK(g.operators.front().inputs[0] == g.input);
      REQUIRE(g.operators.back().op == tfl::DEQUANTIZE);
      CHECK(g.operators.back().outputs[0] == g.output);
      CHECK(g.operators.back().version == 2);
    }
    // The images span [0, 1]: the quantized input is 1/255, -128 as TF's.
    const tfl::Tensor& qin = t_at(g, int8_io ? g.input : g.operators.front().outputs[0]);
    REQUIRE(qin.quantization.scale.size() == 1);
    CHECK(qin.quantization.scale[0] == Approx(1.0 / 255));
    CHECK(qin.quantization.zero_point[0] == -128);

    for (const tfl::Operator& op : g.operators) {
      if (op.op == tfl::QUANTIZE || op.op == tfl::DEQUANTIZE) continue;
      const tfl::Tensor &x = t_at(g, op.inputs[0]), &y = t_at(g, op.outputs[0]);
      INFO(tfl::op_name(op.op) << " -> " << y.name);
      CHECK(x.type == tfl::INT8);
      CHECK(y.type == tfl::INT8);
      REQUIRE(y.quantization.scale.size() == 1);
      switch (op.op) {
        case tfl::CONV_2D:
        case tfl::FULLY_CONNECTED: {
          CHECK(op.version == (op.op == tfl::CONV_2D ? 3 : 4));
          const tfl::Tensor &wt = t_at(g, op.inputs[1]), &b = t_at(g, op.inputs[2]);
          CHECK(wt.type == tfl::INT8);
          REQUIRE(wt.quantization.scale.size() == static_cast<size_t>(wt.shape[0]));
          CHECK(b.type == tfl::INT32);
          REQUIRE(b.quantization.scale.size() == wt.quantization.scale.size());
          const std::vector<float> bias = f.constant(op.inputs[2]);
          std::vector<int32_t> qb(bias.size());
          std::memcpy(qb.data(), g.buffers[b.buffer].data(), qb.size() * 4);
          for (size_t c = 0; c < bias.size(); ++c) {
            CHECK(b.quantization.scale[c] == Approx(x.quantization.scale[0] * wt.quantization.scale[c]));
            CHECK(b.quantization.zero_point[c] == 0);
            CHECK(qb[c] * static_cast<double>(b.quantization.scale[c]) ==
                  Approx(bias[c]).margin(b.quantization.scale[c] * 0.51));
          }
          if (op.activation == tfl::FUSED_RELU) CHECK(y.quantization.zero_point[0] == -128);  // range [0, max]
          break;
        }
        case tfl::MAX_POOL_2D:
        case tfl::RESHAPE:
          CHECK(y.quantization.scale == x.quantization.scale);
          CHECK(y.quantization.zero_point == x.quantization.zero_point);
          CHECK(op.version == (op.op == tfl::MAX_POOL_2D ? 2 : 1));
          break;
        case tfl::SOFTMAX:
          CHECK(y.quantization.scale[0] == 1.f / 256);
          CHECK(y.quantization.zero_point[0] == -128);
          CHECK(op.version == 2);
          break;
        case tfl::MUL:
        case tfl::ADD: {
          CHECK(op.version == 2);
          const tfl::Tensor& c = t_at(g, op.inputs[1]);
          CHECK(c.type == tfl::INT8);
          CHECK(c.quantization.scale.size() == 1);
          break;
        }
        default: FAIL("unexpected operator");
      }
    }
    CHECK(ops_of(g, tfl::MUL).size() == 1);  // bn after a ReLU: not folded
  }
}

TEST_CASE("tflite quantize: bad options and an operator without an int8 kernel", "[cpu][export]") {
  const Model m = quant_model();
  const tfl::Graph f = tfl::build_graph(m, weights_of(m));
  Error e = catch_error([&] { tfl::quantize(f, int8_options(m, tfl::kMinCalibrationSamples - 1)); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("at least 100 calibration images, got 99"));
  CHECK_THAT(e.hint(), Catch::Contains("--calibration-samples"));

  tfl::QuantizeOptions odd = int8_options(m, 120);
  odd.calibration.pop_back();
  e = catch_error([&] { tfl::quantize(f, odd); });
  CHECK_THAT(e.what(), Catch::Contains("do not match the model's input"));

  tfl::QuantizeOptions io;
  io.mode = tfl::QuantizeMode::Dynamic;
  io.int8_io = true;
  e = catch_error([&] { tfl::quantize(f, io); });
  CHECK_THAT(e.what(), Catch::Contains("--int8-io needs --quantize int8"));

  e = catch_error([&] { tfl::parse_quantize_mode("int4"); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("unknown --quantize 'int4'"));
  CHECK_THAT(e.hint(), Catch::Contains("none, float16, dynamic or int8"));
  CHECK(tfl::parse_quantize_mode("dynamic") == tfl::QuantizeMode::Dynamic);

  tfl::Graph odd_op = f;  // an operator outside what the quantizer knows
  odd_op.operators[2].op = 34;  // PAD
  e = catch_error([&] { tfl::quantize(odd_op, int8_options(m, 120)); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("operator PAD"));
  CHECK_THAT(e.what(), Catch::Contains("has no int8 kernel"));
  CHECK_THAT(e.hint(), Catch::Contains("--quantize none, float16 or dynamic"));
}

TEST_CASE("tflite quantize: --quantize without the tflite format writes nothing", "[cpu][export]") {
  TempDir tmp;
  const Model m = quant_model();
  const std::string src = write_source(tmp, m, weights_of(m));
  tfl::QuantizeOptions o;
  o.mode = tfl::QuantizeMode::Float16;
  const std::string base = (tmp.path() / "served").string();
  Error e = catch_error([&] { tandem::export_model(src, base, 0, "onnx", false, o); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK_THAT(e.what(), Catch::Contains("--quantize float16 applies to the TensorFlow Lite export only"));
  CHECK(!std::filesystem::exists(base));
}

#ifdef TANDEM_HAVE_TFLITE
TEST_CASE("tflite quantize: describe reads the parameters back and refuses ones that do not fit", "[cpu][export]") {
  const Model m = quant_model();
  const tfl::Graph g = tfl::quantize(tfl::build_graph(m, weights_of(m)), int8_options(m, 120));
  const json d = tfl::describe_tflite(tfl::encode_model(g), "model.tflite");
  CHECK(d["op_versions"]["CONV_2D"] == 3);
  CHECK(d["op_versions"]["FULLY_CONNECTED"] == 4);
  CHECK(d["op_versions"]["QUANTIZE"] == 1);
  CHECK(d["op_versions"]["DEQUANTIZE"] == 2);
  CHECK(d["inputs"][0]["dtype"] == "FLOAT32");
  size_t quantized = 0;
  for (const auto& t : g.tensors) quantized += !t.quantization.empty();
  REQUIRE(d["quantized_tensors"].size() == quantized);
  CHECK(d["tensor_types"]["INT8"].get<int>() > 0);
  CHECK(d["tensor_types"]["INT32"].get<int>() >= 4);  // four biases, one reshape shape
  bool per_channel = false;
  for (const auto& q : d["quantized_tensors"]) {
    CHECK(q["scale"].size() == q["zero_point"].size());
    per_channel |= q["scale"].size() > 1;
  }
  CHECK(per_channel);

  auto refused = [&](const std::function<void(tfl::Tensor&)>& spoil, const std::string& what) {
    tfl::Graph bad = g;
    for (auto& t : bad.tensors)
      if (t.quantization.scale.size() > 1) {
        spoil(t);
        break;
      }
    const Error e = catch_error([&] { tfl::describe_tflite(tfl::encode_model(bad), "model.tflite"); });
    CHECK(e.kind() == ErrorKind::Data);
    CHECK_THAT(e.what(), Catch::Contains(what));
  };
  refused([](tfl::Tensor& t) { t.quantization.zero_point.pop_back(); }, "zero points");
  refused([](tfl::Tensor& t) {
    t.quantization.scale.pop_back();
    t.quantization.zero_point.pop_back();
  }, "quantization scales for dimension 0");
  refused([](tfl::Tensor& t) { t.quantization.dimension = 7; }, "quantized along dimension 7");
  refused([](tfl::Tensor& t) { t.quantization.scale[0] = 0.f; }, "quantization scale 0");
  refused([](tfl::Tensor& t) { t.quantization.scale[0] = std::numeric_limits<float>::quiet_NaN(); }, "not > 0");
}
#endif

// The TensorFlow Lite export: the graph built per layer type (layouts, BatchNormalization folding,
// fused ReLU), the flatbuffer as the flatbuffers verifier and the generated reader see it,
// byte-reproducibility, and describe_export on truncated and bit-flipped files.
// (Agreement with LiteRT, tf.lite and OpenVINO: tests/interop/tflite_tfjs_check.py.)
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/errors.h"
#include "engine/model.h"
#include "export/exporter.h"
#include "export/tflite_writer.h"
#include "export_fixtures.h"
#include "temp_dir.h"

#ifdef TANDEM_HAVE_TFLITE
#include "export/tflite_schema_generated.h"
#endif

using nlohmann::json;
using tandem::Error;
using tandem::ErrorKind;
using tandem::Model;
using tandem::NamedTensor;
using namespace tandem::test;
namespace tfl = tandem::tfl;

namespace {

std::vector<std::string> op_names(const tfl::Graph& g) {
  std::vector<std::string> out;
  for (const auto& op : g.operators) out.push_back(tfl::op_name(op.op));
  return out;
}

const tfl::Tensor& tensor_of(const tfl::Graph& g, int32_t index) {
  REQUIRE(index >= 0);
  REQUIRE(static_cast<size_t>(index) < g.tensors.size());
  return g.tensors[static_cast<size_t>(index)];
}

// A small model with a folded and an unfolded BatchNormalization, for the byte-level tests.
Model small_model() {
  return Model::from_spec(json::parse(R"({"name": "small", "input_shape": [6, 6, 1], "layers": [
      {"type": "Conv2D", "name": "c", "filters": 2, "kernel_size": 3, "padding": "same"},
      {"type": "BatchNormalization", "name": "bn"}, {"type": "ReLU", "name": "r"},
      {"type": "MaxPool2D", "name": "p", "pool_size": 2}, {"type": "BatchNormalization", "name": "bn2"},
      {"type": "Flatten", "name": "f"}, {"type": "Dense", "name": "d", "units": 3, "activation": "softmax"}]})"),
                          "test spec");
}

}  // namespace

TEST_CASE("tflite: the graph built for every layer type", "[cpu][export]") {
  const Model m = all_layers_model();
  const auto w = weights_of(m);
  const tfl::Graph g = tfl::build_graph(m, w);
  // bn1 follows a conv with relu: MUL + ADD, and r1 fuses into the ADD; c2 has no bias, its zeros
  // are given; Dropout and the linear Activation vanish; bn2 folds into h, a1 fuses into h.
  CHECK(op_names(g) == std::vector<std::string>{"CONV_2D", "MUL", "ADD", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D",
                                                "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"});
  const auto& ops = g.operators;
  CHECK(ops[0].activation == tfl::FUSED_RELU);
  CHECK(ops[2].activation == tfl::FUSED_RELU);
  CHECK(ops[4].activation == tfl::NONE);
  CHECK(ops[7].activation == tfl::FUSED_RELU);
  CHECK(ops[8].activation == tfl::NONE);
  CHECK(ops[0].padding == tfl::SAME);
  CHECK(ops[3].padding == tfl::VALID);
  CHECK((ops[4].stride_h == 2 && ops[4].stride_w == 2));
  CHECK((ops[5].filter_h == 3 && ops[5].filter_w == 3 && ops[5].stride_h == 2 && ops[5].padding == tfl::SAME));
  CHECK(ops[6].new_shape == std::vector<int32_t>{-1, 4 * 4 * 6});

  // Every conv and fully connected op has three inputs: x, weights, bias.
  for (const auto& op : ops)
    if (op.op == tfl::CONV_2D || op.op == tfl::FULLY_CONNECTED) REQUIRE(op.inputs.size() == 3);

  // Conv filter OHWI = HWIO transposed (3, 0, 1, 2); the absent bias is zeros.
  const NamedTensor& k2 = tensor_named(w, "c2/kernel");  // HWIO [3, 2, 4, 6]
  CHECK(tensor_of(g, ops[4].inputs[1]).shape == std::vector<int32_t>{6, 3, 2, 4});
  const std::vector<float> f2 = g.constant(ops[4].inputs[1]);
  for (int h = 0; h < 3; ++h)
    for (int x = 0; x < 2; ++x)
      for (int i = 0; i < 4; ++i)
        for (int o = 0; o < 6; ++o)
          REQUIRE(f2[static_cast<size_t>(((o * 3 + h) * 2 + x) * 4 + i)] ==
                  k2.values[static_cast<size_t>(((h * 2 + x) * 4 + i) * 6 + o)]);
  CHECK(g.constant(ops[4].inputs[2]) == std::vector<float>(6, 0.f));

  // bn1 unfolded: the MUL / ADD constants are the backend's scale and shift.
  const auto bn1 = tandem::fold_batch_norm(tensor_named(w, "bn1/gamma").values, tensor_named(w, "bn1/beta").values,
                                           tensor_named(w, "bn1/moving_mean").values,
                                           tensor_named(w, "bn1/moving_variance").values, 1e-3f);
  CHECK(g.constant(ops[1].inputs[1]) == bn1.scale);
  CHECK(g.constant(ops[2].inputs[1]) == bn1.shift);

  // bn2 folded into h: weights [out, in] = kernel^T * scale[out], bias = 0 * scale + shift.
  const auto bn2 = tandem::fold_batch_norm(tensor_named(w, "bn2/gamma").values, tensor_named(w, "bn2/beta").values,
                                           tensor_named(w, "bn2/moving_mean").values,
                                           tensor_named(w, "bn2/moving_variance").values, 0.01f);
  const NamedTensor& kh = tensor_named(w, "h/kernel");  // [96, 8]
  CHECK(tensor_of(g, ops[7].inputs[1]).shape == std::vector<int32_t>{8, 96});
  const std::vector<float> wh = g.constant(ops[7].inputs[1]);
  for (int i = 0; i < 96; ++i)
    for (int o = 0; o < 8; ++o)
      REQUIRE(wh[static_cast<size_t>(o * 96 + i)] ==
              kh.values[static_cast<size_t>(i * 8 + o)] * bn2.scale[static_cast<size_t>(o)]);
  std::vector<float> bias_h = g.constant(ops[7].inputs[2]);
  for (size_t o = 0; o < 8; ++o) CHECK(bias_h[o] == 0.f * bn2.scale[o] + bn2.shift[o]);
  // The output layer keeps its own bias, unfolded.
  CHECK(g.constant(ops[8].inputs[2]) == tensor_named(w, "out/bias").values);

  // Interface: input [1, 28, 28, 1] with a free batch, output "probabilities" [1, 10].
  CHECK(tensor_of(g, g.input).name == "input");
  CHECK(tensor_of(g, g.input).shape == std::vector<int32_t>{1, 28, 28, 1});
  CHECK(tensor_of(g, g.input).free_batch);
  CHECK(tensor_of(g, g.output).name == "probabilities");
  CHECK(tensor_of(g, g.output).shape == std::vector<int32_t>{1, 10});
  CHECK(ops.back().outputs[0] == g.output);
  // Activations have no data and a free batch; constants have their own non-empty buffer.
  CHECK(g.buffers[0].empty());
  for (const auto& t : g.tensors) {
    if (t.buffer == 0) {
      CHECK(t.free_batch);
    } else {
      CHECK(!t.free_batch);
      CHECK(!g.buffers[t.buffer].empty());
    }
  }
}

TEST_CASE("tflite: a model whose output needs no op, and an unfoldable ReLU", "[cpu][export]") {
  // ReLU first: nothing to fuse into. Softmax on a flat input: the last op, already rank 2.
  const Model m = Model::from_spec(json::parse(R"({"input_shape": [12], "layers": [
      {"type": "ReLU"}, {"type": "Dense", "units": 5}, {"type": "ReLU"}, {"type": "ReLU"},
      {"type": "Dense", "units": 3}, {"type": "Softmax"}]})"),
                                   "test spec");
  const tfl::Graph g = tfl::build_graph(m, weights_of(m));
  CHECK(op_names(g) == std::vector<std::string>{"RELU", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"});
  CHECK(g.operators[1].activation == tfl::FUSED_RELU);  // the two ReLUs: one fused activation
  CHECK(tensor_of(g, g.output).shape == std::vector<int32_t>{1, 3});

  // A ReLU after max pooling fuses into the pool (its Pool2DOptions), as TF's converter writes it.
  const Model pooled = Model::from_spec(json::parse(R"({"input_shape": [6, 6, 1], "layers": [
      {"type": "Conv2D", "filters": 2, "kernel_size": 3}, {"type": "MaxPool2D", "pool_size": 2}, {"type": "ReLU"},
      {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})"),
                                        "test spec");
  const tfl::Graph gp = tfl::build_graph(pooled, weights_of(pooled));
  CHECK(op_names(gp) == std::vector<std::string>{"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"});
  CHECK(gp.operators[0].activation == tfl::NONE);
  CHECK(gp.operators[1].activation == tfl::FUSED_RELU);
}

#ifdef TANDEM_HAVE_TFLITE

TEST_CASE("tflite: the flatbuffer passes the verifier and reads back", "[cpu][export]") {
  const Model m = all_layers_model();
  const tfl::Graph g = tfl::build_graph(m, weights_of(m));
  const std::string bytes = tfl::encode_model(g);
  REQUIRE(bytes.size() > 8);
  CHECK(std::memcmp(bytes.data() + 4, "TFL3", 4) == 0);
  flatbuffers::Verifier verifier(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  REQUIRE(tflite::VerifyModelBuffer(verifier));

  const tflite::Model* model = tflite::GetModel(bytes.data());
  CHECK(model->version() == 3);
  REQUIRE(model->subgraphs()->size() == 1);
  const tflite::SubGraph* sg = model->subgraphs()->Get(0);
  CHECK(sg->name()->str() == "main");
  CHECK(sg->operators()->size() == g.operators.size());
  CHECK(sg->tensors()->size() == g.tensors.size());
  REQUIRE(model->buffers()->size() == g.buffers.size());
  CHECK(model->buffers()->Get(0)->data() == nullptr);  // buffers[0] is empty
  for (size_t i = 1; i < g.buffers.size(); ++i) {
    const auto* data = model->buffers()->Get(static_cast<flatbuffers::uoffset_t>(i))->data();
    REQUIRE(data);
    CHECK(std::string(reinterpret_cast<const char*>(data->data()), data->size()) == g.buffers[i]);
    CHECK((data->data() - reinterpret_cast<const uint8_t*>(bytes.data())) % 16 == 0);  // force_align: 16
  }

  // Operator codes: both fields, version 1.
  for (const tflite::OperatorCode* code : *model->operator_codes()) {
    CHECK(static_cast<int32_t>(code->builtin_code()) == code->deprecated_builtin_code());
    CHECK(code->version() == 1);
  }
  // Options that the runtime would read as defaults if they were missing.
  int softmax = 0, convs = 0;
  for (const tflite::Operator* op : *sg->operators()) {
    const auto code = model->operator_codes()->Get(op->opcode_index())->builtin_code();
    if (code == tflite::BuiltinOperator::SOFTMAX) {
      REQUIRE(op->builtin_options_as_SoftmaxOptions());
      CHECK(op->builtin_options_as_SoftmaxOptions()->beta() == 1.0f);
      ++softmax;
    }
    if (code == tflite::BuiltinOperator::CONV_2D) {
      const auto* o = op->builtin_options_as_Conv2DOptions();
      REQUIRE(o);
      CHECK(o->stride_h() > 0);
      CHECK(o->stride_w() > 0);
      CHECK(o->dilation_h_factor() == 1);
      ++convs;
    }
    if (code == tflite::BuiltinOperator::MAX_POOL_2D) {
      const auto* o = op->builtin_options_as_Pool2DOptions();
      REQUIRE(o);
      CHECK((o->stride_h() > 0 && o->filter_width() > 0));
    }
    if (code == tflite::BuiltinOperator::RESHAPE) {
      REQUIRE(op->builtin_options_as_ReshapeOptions());
      CHECK(op->builtin_options_as_ReshapeOptions()->new_shape()->Get(0) == -1);
    }
  }
  CHECK(softmax == 1);
  CHECK(convs == 2);
  // The free batch: shape 1, shape_signature -1, on the input and every activation.
  const tflite::Tensor* in = sg->tensors()->Get(static_cast<flatbuffers::uoffset_t>(sg->inputs()->Get(0)));
  CHECK(in->name()->str() == "input");
  CHECK(in->shape()->Get(0) == 1);
  CHECK(in->shape_signature()->Get(0) == -1);
  for (const tflite::Tensor* t : *sg->tensors())
    if (t->buffer() == 0) CHECK((t->shape_signature() && t->shape_signature()->Get(0) == -1));
  // One signature, serving_default: input -> input, probabilities -> the output tensor.
  REQUIRE(model->signature_defs()->size() == 1);
  const tflite::SignatureDef* sig = model->signature_defs()->Get(0);
  CHECK(sig->signature_key()->str() == "serving_default");
  CHECK(sig->subgraph_index() == 0);
  CHECK(sig->inputs()->Get(0)->name()->str() == "input");
  CHECK(static_cast<int32_t>(sig->inputs()->Get(0)->tensor_index()) == g.input);
  CHECK(sig->outputs()->Get(0)->name()->str() == "probabilities");
  CHECK(static_cast<int32_t>(sig->outputs()->Get(0)->tensor_index()) == g.output);

  // describe_tflite reports the same.
  const json d = tfl::describe_tflite(bytes, "model.tflite");
  CHECK(d["ops"] == json{{"CONV_2D", 2},
                         {"MUL", 1},
                         {"ADD", 1},
                         {"MAX_POOL_2D", 2},
                         {"RESHAPE", 1},
                         {"FULLY_CONNECTED", 2},
                         {"SOFTMAX", 1}});
  CHECK(d["tensors"] == g.tensors.size());
  CHECK(d["inputs"][0]["shape"] == json::array({-1, 28, 28, 1}));
  CHECK(d["outputs"][0] == json{{"name", "probabilities"}, {"dtype", "FLOAT32"}, {"shape", {-1, 10}}});
  CHECK(d["signatures"]["serving_default"]["outputs"]["probabilities"] == "probabilities");
  size_t data_bytes = 0;
  for (const auto& b : g.buffers) data_bytes += b.size();
  CHECK(d["buffer_bytes"] == data_bytes);
}

TEST_CASE("tflite: exports are byte-reproducible", "[cpu][export]") {
  TempDir tmp;
  const Model m = all_layers_model();
  const auto w = weights_of(m);
  CHECK(tfl::encode_model(tfl::build_graph(m, w)) == tfl::encode_model(tfl::build_graph(m, w)));
  const std::string src = write_source(tmp, m, w);
  const std::string v1 = tandem::export_model(src, tmp / "serving/all", 0, "tflite", false);
  const std::string v2 = tandem::export_model(src, tmp / "serving/all", 0, "tflite,onnx", false);
  CHECK(entries_of(v1) == std::vector<std::string>{"model.json", "model.tflite", "weights.tdw"});
  CHECK(read_bytes(v1 + "/model.tflite") == read_bytes(v2 + "/model.tflite"));
  CHECK(read_bytes(v1 + "/model.tflite") == tfl::encode_model(tfl::build_graph(m, w)));
  // Other weights, other bytes (the test would pass on a constant file otherwise).
  CHECK(read_bytes(v1 + "/model.tflite") != tfl::encode_model(tfl::build_graph(m, weights_of(m, 6))));
  const json d = tandem::describe_export(v2);
  CHECK(d["formats"] == json::array({"native", "onnx", "tflite"}));
  CHECK(d["tflite"]["signatures"]["serving_default"]["inputs"]["input"] == "input");
}

TEST_CASE("tflite: every truncation and sampled bit flips give a description or a Data error", "[cpu][export]") {
  const Model m = small_model();
  const std::string bytes = tfl::encode_model(tfl::build_graph(m, weights_of(m)));
  int parsed = 0, refused = 0;
  auto attempt = [&](const std::string& b) {
    try {
      const json d = tfl::describe_tflite(b, "x/model.tflite");
      CHECK_NOTHROW(d.dump());
      ++parsed;
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Data);
      CHECK(std::string(e.what()).find("x/model.tflite") != std::string::npos);
      ++refused;
    }
  };
  for (size_t len = 0; len < bytes.size(); ++len) attempt(bytes.substr(0, len));
  CHECK(refused >= static_cast<int>(bytes.size()) - 16);  // a truncated flatbuffer fails the verifier
  std::mt19937 rng(17);
  for (int round = 0; round < 3000; ++round) {
    std::string b = bytes;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] ^= static_cast<char>(1u << (rng() % 8));
    attempt(b);
  }
  attempt(std::string(60, '\xff'));
  attempt(std::string(4, '\0') + "TFL3");
  CHECK(parsed > 0);  // flips inside weights leave a valid model
  CHECK(parsed + refused == static_cast<int>(bytes.size()) + 3002);
}

#else

TEST_CASE("tflite: without flatbuffers the format fails with a hint", "[cpu][export]") {
  const Model m = all_layers_model();
  const Error e = catch_error([&] { tfl::encode_model(tfl::build_graph(m, weights_of(m))); });
  CHECK(e.kind() == ErrorKind::InvalidArgument);
  CHECK(e.hint().find("flatbuffers") != std::string::npos);
}

#endif

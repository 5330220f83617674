#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "engine/errors.h"
#include "engine/layer.h"

namespace tandem {

using nlohmann::json;

Init parse_init(const std::string& name) {
  if (name == "glorot_uniform") return Init::GlorotUniform;
  if (name == "he_normal") return Init::HeNormal;
  if (name == "he_uniform") return Init::HeUniform;
  if (name == "zeros") return Init::Zeros;
  if (name == "ones") return Init::Ones;
  throw_invalid("unknown initializer '" + name + "'", "use glorot_uniform, he_normal, he_uniform, zeros or ones");
}

const char* init_name(Init init) {
  switch (init) {
    case Init::GlorotUniform: return "glorot_uniform";
    case Init::HeNormal: return "he_normal";
    case Init::HeUniform: return "he_uniform";
    case Init::Zeros: return "zeros";
    case Init::Ones: return "ones";
  }
  return "?";
}

Activation parse_activation(const std::string& name) {
  if (name == "linear" || name == "none") return Activation::Linear;
  if (name == "relu") return Activation::Relu;
  if (name == "softmax") return Activation::Softmax;
  throw_invalid("unknown activation '" + name + "'", "use relu, softmax or linear");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Linear: return "linear";
    case Activation::Relu: return "relu";
    case Activation::Softmax: return "softmax";
  }
  return "?";
}

namespace {

// Reads one layer's JSON config strictly: every key must be known, every value well typed.
class ConfigReader {
 public:
  ConfigReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("must be a JSON object", "write e.g. {\"type\": \"Dense\", \"units\": 10}");
  }
  [[noreturn]] void fail(const std::string& what, const std::string& hint = "") const {
    throw_invalid(where_ + ": " + what,
                  hint.empty() ? "README.md, section 'Model specs', lists every layer type and its fields" : hint);
  }
  bool has(const char* key) {
    known_.insert(key);
    return j_.contains(key);
  }
  int64_t integer(const char* key, int64_t min, int64_t max, const int64_t* def = nullptr) {
    if (!has(key)) {
      if (def) return *def;
      fail(std::string("missing field \"") + key + "\"");
    }
    const json& v = j_.at(key);
    if (!v.is_number_integer()) fail(std::string("\"") + key + "\" must be an integer, got " + v.dump());
    int64_t x = v.get<int64_t>();
    if (x < min || x > max)
      fail(std::string("\"") + key + "\" = " + std::to_string(x) + " is out of range [" + std::to_string(min) +
           ", " + std::to_string(max) + "]");
    return x;
  }
  double number(const char* key, double min, double max, double def, bool max_inclusive = true) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_number()) fail(std::string("\"") + key + "\" must be a number, got " + v.dump());
    double x = v.get<double>();
    if (!(x >= min) || (max_inclusive ? !(x <= max) : !(x < max)))
      fail(std::string("\"") + key + "\" = " + v.dump() + " is out of range " + "[" + json(min).dump() + ", " +
           json(max).dump() + (max_inclusive ? "]" : ")"));
    return x;
  }
  std::string string(const char* key, const std::string& def) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_string()) fail(std::string("\"") + key + "\" must be a string, got " + v.dump());
    return v.get<std::string>();
  }
  bool boolean(const char* key, bool def) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail(std::string("\"") + key + "\" must be true or false, got " + v.dump());
    return v.get<bool>();
  }
  // An int or a pair [h, w], as Keras accepts for kernel_size, strides, pool_size.
  std::pair<int, int> pair(const char* key, int min, int max, std::pair<int, int> def, bool required) {
    if (!has(key)) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return def;
    }
    const json& v = j_.at(key);
    auto check = [&](const json& e) {
      if (!e.is_number_integer()) fail(std::string("\"") + key + "\" must be an integer or [h, w], got " + v.dump());
      int64_t x = e.get<int64_t>();
      if (x < min || x > max)
        fail(std::string("\"") + key + "\" = " + v.dump() + " is out of range [" + std::to_string(min) + ", " +
             std::to_string(max) + "]");
      return static_cast<int>(x);
    };
    if (v.is_array()) {
      if (v.size() != 2) fail(std::string("\"") + key + "\" must have two entries [h, w], got " + v.dump());
      return {check(v[0]), check(v[1])};
    }
    int x = check(v);
    return {x, x};
  }
  void finish() {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!known_.count(it.key())) {
        std::string keys;
        for (const auto& k : known_) keys += (keys.empty() ? "" : ", ") + k;
        fail("unknown field \"" + it.key() + "\"", "fields of this layer: " + keys);
      }
  }

 private:
  const json& j_;
  std::string where_;
  std::set<std::string> known_{"type", "name"};
};

std::string where_of(const Layer& l) { return "layer '" + l.name() + "' (" + l.type() + ")"; }

// Applies the fused activation of Dense/Conv2D in place on the forward pass.
void activate_forward(const StepContext& ctx, Activation act, float* y, int64_t rows, int cols) {
  if (act == Activation::Relu) ctx.backend->relu_forward(y, y, size_t(rows) * cols);
  if (act == Activation::Softmax && ctx.want_probs) ctx.backend->softmax(y, y, rows, cols);
}

// Turns dy (w.r.t. the activation output) into the gradient w.r.t. the pre-activation, in place.
// For softmax the trainer already passes d(loss)/d(logits).
void activate_backward(const StepContext& ctx, Activation act, const float* y, float* dy, size_t n) {
  if (act == Activation::Relu) ctx.backend->relu_backward(y, dy, dy, n);
}

std::pair<int, int> padded_extent(int in, int k, int stride, bool same, int* pad_before) {
  if (same) {
    int out = (in + stride - 1) / stride;
    int total = std::max((out - 1) * stride + k - in, 0);
    *pad_before = total / 2;
    return {out, total};
  }
  *pad_before = 0;
  int out = in >= k ? (in - k) / stride + 1 : 0;
  return {out, 0};
}

Shape require_image(const Layer& l, const Shape& in) {
  if (in.rank() != 3)
    throw_invalid(where_of(l) + " expects an image input (height, width, channels), got " + in.str(),
                  in.rank() == 1 ? "remove the Flatten before it, or use Dense" : "");
  return in;
}

// ---- Dense --------------------------------------------------------------------------------
class Dense final : public Layer {
 public:
  explicit Dense(ConfigReader& r) {
    units_ = static_cast<int>(r.integer("units", 1, 1 << 24));
    act_ = parse_activation(r.string("activation", "linear"));
    use_bias_ = r.boolean("use_bias", true);
    init_ = parse_init(r.string("kernel_initializer", "glorot_uniform"));
  }
  std::string type() const override { return "Dense"; }
  Shape build(const Shape& in) override {
    if (in.rank() != 1)
      throw_invalid(where_of(*this) + " expects a flat input, got " + in.str(), "add a Flatten layer before it");
    in_ = in;
    out_ = Shape{units_};
    return out_;
  }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> p{{"kernel", Shape{in_[0], units_}, init_, in_[0], units_, true}};
    if (use_bias_) p.push_back({"bias", Shape{units_}, Init::Zeros, 0, 0, true});
    return p;
  }
  bool ends_with_softmax() const override { return act_ == Activation::Softmax; }
  void forward(const StepContext& ctx, const float* x, float* y) override {
    const int in = static_cast<int>(in_[0]);
    const int m = static_cast<int>(ctx.batch);
    // GEMM, bias and ReLU in one backend call (fused where the backend can); a softmax follows.
    ctx.backend->dense_forward(x, params_[0], use_bias_ ? params_[1] : nullptr, act_ == Activation::Relu, m, in, units_,
                               y);
    if (act_ == Activation::Softmax) activate_forward(ctx, act_, y, m, units_);
  }
  void backward(const StepContext& ctx, const float* x, const float* y, float* dy, float* dx) override {
    const int in = static_cast<int>(in_[0]);
    const int m = static_cast<int>(ctx.batch);
    activate_backward(ctx, act_, y, dy, size_t(m) * units_);
    ctx.backend->gemm(true, false, in, units_, m, 1.f, x, in, dy, units_, 0.f, grads_[0], units_);
    if (use_bias_) ctx.backend->bias_grad(dy, grads_[1], m, units_);
    if (dx) ctx.backend->gemm(false, true, m, in, units_, 1.f, dy, units_, params_[0], units_, 0.f, dx, in);
  }
  json config() const override {
    json j{{"type", type()}, {"name", name_}, {"units", units_}, {"activation", activation_name(act_)}};
    if (!use_bias_) j["use_bias"] = false;
    if (init_ != Init::GlorotUniform) j["kernel_initializer"] = init_name(init_);
    return j;
  }

 private:
  int units_ = 0;
  Activation act_ = Activation::Linear;
  bool use_bias_ = true;
  Init init_ = Init::GlorotUniform;
};

// ---- Conv2D -------------------------------------------------------------------------------
class Conv2D final : public Layer {
 public:
  explicit Conv2D(ConfigReader& r) {
    filters_ = static_cast<int>(r.integer("filters", 1, 1 << 16));
    kernel_ = r.pair("kernel_size", 1, 1024, {0, 0}, true);
    strides_ = r.pair("strides", 1, 1024, {1, 1}, false);
    std::string pad = r.string("padding", "valid");
    if (pad != "same" && pad != "valid")
      r.fail("\"padding\" must be \"same\" or \"valid\", got \"" + pad + "\"");
    same_ = pad == "same";
    act_ = parse_activation(r.string("activation", "linear"));
    use_bias_ = r.boolean("use_bias", true);
    init_ = parse_init(r.string("kernel_initializer", "glorot_uniform"));
  }
  std::string type() const override { return "Conv2D"; }
  Shape build(const Shape& in) override {
    require_image(*this, in);
    in_ = in;
    g_.h = static_cast<int>(in[0]);
    g_.w = static_cast<int>(in[1]);
    g_.c = static_cast<int>(in[2]);
    g_.kh = kernel_.first;
    g_.kw = kernel_.second;
    g_.k = filters_;
    g_.sh = strides_.first;
    g_.sw = strides_.second;
    g_.oh = padded_extent(g_.h, g_.kh, g_.sh, same_, &g_.pad_top).first;
    g_.ow = padded_extent(g_.w, g_.kw, g_.sw, same_, &g_.pad_left).first;
    if (g_.oh <= 0 || g_.ow <= 0)
      throw_invalid(where_of(*this) + ": kernel " + std::to_string(g_.kh) + "x" + std::to_string(g_.kw) +
                        " does not fit input " + in.str() + " with padding \"valid\"",
                    "use \"padding\": \"same\" or a smaller kernel");
    out_ = Shape{g_.oh, g_.ow, g_.k};
    return out_;
  }
  std::vector<ParamSpec> param_specs() const override {
    int64_t rf = int64_t(g_.kh) * g_.kw;
    std::vector<ParamSpec> p{{"kernel", Shape{g_.kh, g_.kw, g_.c, g_.k}, init_, rf * g_.c, rf * g_.k, true}};
    if (use_bias_) p.push_back({"bias", Shape{g_.k}, Init::Zeros, 0, 0, true});
    return p;
  }
  bool ends_with_softmax() const override { return act_ == Activation::Softmax; }
  void forward(const StepContext& ctx, const float* x, float* y) override {
    ConvGeometry g = g_;
    g.n = static_cast<int>(ctx.batch);
    // Convolution, bias and ReLU in one backend call (fused where the backend can); a softmax
    // activation follows separately.
    ctx.backend->conv2d_bias_relu_forward(g, x, params_[0], use_bias_ ? params_[1] : nullptr,
                                          act_ == Activation::Relu, y);
    if (act_ == Activation::Softmax) activate_forward(ctx, act_, y, int64_t(g.n) * g.oh * g.ow, g.k);
  }
  void backward(const StepContext& ctx, const float* x, const float* y, float* dy, float* dx) override {
    ConvGeometry g = g_;
    g.n = static_cast<int>(ctx.batch);
    ctx.backend->conv2d_bias_relu_backward(g, x, y, dy, params_[0], act_ == Activation::Relu, grads_[0],
                                           use_bias_ ? grads_[1] : nullptr, dx);
  }
  json config() const override {
    json j{{"type", type()},
           {"name", name_},
           {"filters", filters_},
           {"kernel_size", {kernel_.first, kernel_.second}},
           {"strides", {strides_.first, strides_.second}},
           {"padding", same_ ? "same" : "valid"},
           {"activation", activation_name(act_)}};
    if (!use_bias_) j["use_bias"] = false;
    if (init_ != Init::GlorotUniform) j["kernel_initializer"] = init_name(init_);
    return j;
  }
  const ConvGeometry& geometry() const { return g_; }

 private:
  int filters_ = 0;
  std::pair<int, int> kernel_, strides_;
  bool same_ = false;
  Activation act_ = Activation::Linear;
  bool use_bias_ = true;
  Init init_ = Init::GlorotUniform;
  ConvGeometry g_;
};

// ---- MaxPool2D ----------------------------------------------------------------------------
class MaxPool2D final : public Layer {
 public:
  explicit MaxPool2D(ConfigReader& r) {
    pool_ = r.pair("pool_size", 1, 1024, {2, 2}, false);
    strides_ = r.pair("strides", 1, 1024, pool_, false);
    std::string pad = r.string("padding", "valid");
    if (pad != "same" && pad != "valid")
      r.fail("\"padding\" must be \"same\" or \"valid\", got \"" + pad + "\"");
    same_ = pad == "same";
  }
  std::string type() const override { return "MaxPool2D"; }
  Shape build(const Shape& in) override {
    require_image(*this, in);
    in_ = in;
    g_.h = static_cast<int>(in[0]);
    g_.w = static_cast<int>(in[1]);
    g_.c = static_cast<int>(in[2]);
    g_.ph = pool_.first;
    g_.pw = pool_.second;
    g_.sh = strides_.first;
    g_.sw = strides_.second;
    g_.oh = padded_extent(g_.h, g_.ph, g_.sh, same_, &g_.pad_top).first;
    g_.ow = padded_extent(g_.w, g_.pw, g_.sw, same_, &g_.pad_left).first;
    if (g_.oh <= 0 || g_.ow <= 0)
      throw_invalid(where_of(*this) + ": pool " + std::to_string(g_.ph) + "x" + std::to_string(g_.pw) +
                        " does not fit input " + in.str(),
                    "use a smaller pool_size or \"padding\": \"same\"");
    out_ = Shape{g_.oh, g_.ow, g_.c};
    return out_;
  }
  size_t scratch_floats(int64_t batch) const override { return size_t(batch) * out_.numel(); }  // argmax
  void forward(const StepContext& ctx, const float* x, float* y) override {
    PoolGeometry g = g_;
    g.n = static_cast<int>(ctx.batch);
    // Only a training step's backward reads the argmax.
    ctx.backend->maxpool_forward(g, x, y, ctx.training ? reinterpret_cast<int32_t*>(scratch_) : nullptr);
  }
  void backward(const StepContext& ctx, const float*, const float*, float* dy, float* dx) override {
    if (!dx) return;
    PoolGeometry g = g_;
    g.n = static_cast<int>(ctx.batch);
    ctx.backend->maxpool_backward(g, dy, reinterpret_cast<const int32_t*>(scratch_), dx);
  }
  json config() const override {
    return json{{"type", type()},
                {"name", name_},
                {"pool_size", {pool_.first, pool_.second}},
                {"strides", {strides_.first, strides_.second}},
                {"padding", same_ ? "same" : "valid"}};
  }

 private:
  std::pair<int, int> pool_, strides_;
  bool same_ = false;
  PoolGeometry g_;
};

// ---- Flatten ------------------------------------------------------------------------------
class Flatten final : public Layer {
 public:
  explicit Flatten(ConfigReader&) {}
  std::string type() const override { return "Flatten"; }
  Shape build(const Shape& in) override {
    in_ = in;
    out_ = Shape{in.numel()};
    return out_;
  }
  void forward(const StepContext& ctx, const float* x, float* y) override {
    ctx.backend->copy(y, x, sizeof(float) * size_t(ctx.batch) * out_.numel());
  }
  void backward(const StepContext& ctx, const float*, const float*, float* dy, float* dx) override {
    if (dx) ctx.backend->copy(dx, dy, sizeof(float) * size_t(ctx.batch) * out_.numel());
  }
  json config() const override { return json{{"type", type()}, {"name", name_}}; }
};

// ---- Activation / ReLU / Softmax ------------------------------------------------------------
class ActivationLayer final : public Layer {
 public:
  ActivationLayer(ConfigReader& r, const std::string& type) : type_(type) {
    if (type == "ReLU")
      act_ = Activation::Relu;
    else if (type == "Softmax")
      act_ = Activation::Softmax;
    else
      act_ = parse_activation(r.string("activation", ""));
  }
  std::string type() const override { return type_; }
  Shape build(const Shape& in) override {
    if (act_ == Activation::Softmax && in.rank() != 1)
      throw_invalid(where_of(*this) + ": softmax needs a flat input, got " + in.str(), "add a Flatten before it");
    in_ = out_ = in;
    return out_;
  }
  bool ends_with_softmax() const override { return act_ == Activation::Softmax; }
  void forward(const StepContext& ctx, const float* x, float* y) override {
    size_t n = size_t(ctx.batch) * out_.numel();
    if (act_ == Activation::Relu)
      ctx.backend->relu_forward(x, y, n);
    else if (act_ == Activation::Softmax && ctx.want_probs)
      ctx.backend->softmax(x, y, ctx.batch, static_cast<int>(out_.numel()));
    else
      ctx.backend->copy(y, x, sizeof(float) * n);
  }
  void backward(const StepContext& ctx, const float*, const float* y, float* dy, float* dx) override {
    if (!dx) return;
    size_t n = size_t(ctx.batch) * out_.numel();
    if (act_ == Activation::Relu)
      ctx.backend->relu_backward(y, dy, dx, n);
    else
      ctx.backend->copy(dx, dy, sizeof(float) * n);  // linear, or softmax whose gradient is fused
  }
  json config() const override {
    json j{{"type", type_}, {"name", name_}};
    if (type_ == "Activation") j["activation"] = activation_name(act_);
    return j;
  }

 private:
  std::string type_;
  Activation act_ = Activation::Linear;
};

// ---- Dropout ------------------------------------------------------------------------------
class Dropout final : public Layer {
 public:
  explicit Dropout(ConfigReader& r) { rate_ = static_cast<float>(r.number("rate", 0.0, 1.0, -1.0, false)); }
  std::string type() const override { return "Dropout"; }
  Shape build(const Shape& in) override {
    if (rate_ < 0.f) throw_invalid(where_of(*this) + ": missing field \"rate\"", "write e.g. \"rate\": 0.5");
    in_ = out_ = in;
    return out_;
  }
  size_t scratch_floats(int64_t batch) const override { return size_t(batch) * out_.numel(); }  // mask
  void forward(const StepContext& ctx, const float* x, float* y) override {
    const int64_t cols = out_.numel();
    if (!ctx.training || rate_ == 0.f) {
      ctx.backend->copy(y, x, sizeof(float) * size_t(ctx.batch) * cols);
      return;
    }
    DropoutParams p;
    p.rate = rate_;
    p.seed = ctx.seed;
    p.step = ctx.step;
    p.first_sample = ctx.first_sample;
    p.rows = ctx.batch;
    p.cols = cols;
    p.layer = static_cast<uint64_t>(index_);
    ctx.backend->dropout_forward(p, x, y, scratch_);
  }
  void backward(const StepContext& ctx, const float*, const float*, float* dy, float* dx) override {
    if (!dx) return;
    size_t n = size_t(ctx.batch) * out_.numel();
    if (rate_ == 0.f)
      ctx.backend->copy(dx, dy, sizeof(float) * n);
    else
      ctx.backend->multiply(dy, scratch_, dx, n);
  }
  json config() const override { return json{{"type", type()}, {"name", name_}, {"rate", rate_}}; }

 private:
  float rate_ = -1.f;
};

// ---- BatchNormalization -------------------------------------------------------------------
class BatchNormalization final : public Layer {
 public:
  explicit BatchNormalization(ConfigReader& r) {
    momentum_ = static_cast<float>(r.number("momentum", 0.0, 1.0, 0.99));
    epsilon_ = static_cast<float>(r.number("epsilon", 1e-12, 1.0, 1e-3));
  }
  std::string type() const override { return "BatchNormalization"; }
  Shape build(const Shape& in) override {
    if (in.rank() != 1 && in.rank() != 3)
      throw_invalid(where_of(*this) + " expects a flat or image input, got " + in.str());
    in_ = out_ = in;
    channels_ = static_cast<int>(in.dims.back());
    return out_;
  }
  std::vector<ParamSpec> param_specs() const override {
    Shape s{channels_};
    return {{"gamma", s, Init::Ones, 0, 0, true},
            {"beta", s, Init::Zeros, 0, 0, true},
            {"moving_mean", s, Init::Zeros, 0, 0, false},
            {"moving_variance", s, Init::Ones, 0, 0, false}};
  }
  size_t scratch_floats(int64_t) const override { return 2 * size_t(channels_); }  // batch mean, inv std
  BatchNormParams params(int64_t batch) const {
    BatchNormParams p;
    p.rows = batch * (out_.numel() / channels_);
    p.channels = channels_;
    p.epsilon = epsilon_;
    p.momentum = momentum_;
    return p;
  }
  void forward(const StepContext& ctx, const float* x, float* y) override {
    if (ctx.training)
      ctx.backend->batchnorm_forward_train(params(ctx.batch), x, params_[0], params_[1], params_[2], params_[3], y,
                                           scratch_, scratch_ + channels_);
    else
      ctx.backend->batchnorm_forward_infer(params(ctx.batch), x, params_[0], params_[1], params_[2], params_[3], y);
  }
  void backward(const StepContext& ctx, const float* x, const float*, float* dy, float* dx) override {
    // The input gradient is needed to compute nothing else, but the kernel writes it anyway; give
    // it dy's own storage when this is the first layer.
    ctx.backend->batchnorm_backward(params(ctx.batch), x, dy, params_[0], scratch_, scratch_ + channels_,
                                    dx ? dx : dy, grads_[0], grads_[1]);
  }
  json config() const override {
    return json{{"type", type()}, {"name", name_}, {"momentum", momentum_}, {"epsilon", epsilon_}};
  }

 private:
  float momentum_ = 0.99f, epsilon_ = 1e-3f;
  int channels_ = 0;
};

}  // namespace

std::string default_layer_stem(const std::string& type) {
  if (type == "Dense") return "dense";
  if (type == "Conv2D") return "conv2d";
  if (type == "MaxPool2D") return "max_pooling2d";
  if (type == "Flatten") return "flatten";
  if (type == "Dropout") return "dropout";
  if (type == "BatchNormalization") return "batch_normalization";
  if (type == "ReLU") return "re_lu";
  if (type == "Softmax") return "softmax";
  return "activation";
}

std::unique_ptr<Layer> make_layer(const json& config, const std::string& where) {
  if (!config.is_object()) throw_invalid(where + " must be a JSON object, got " + config.dump());
  if (!config.contains("type") || !config["type"].is_string())
    throw_invalid(where + ": missing field \"type\"", "write e.g. {\"type\": \"Dense\", \"units\": 10}");
  std::string type = config["type"].get<std::string>();
  if (type == "MaxPooling2D") type = "MaxPool2D";  // Keras's other spelling
  std::string loc = where + " (" + type + ")";
  ConfigReader r(config, loc);
  std::unique_ptr<Layer> layer;
  if (type == "Dense")
    layer = std::make_unique<Dense>(r);
  else if (type == "Conv2D")
    layer = std::make_unique<Conv2D>(r);
  else if (type == "MaxPool2D")
    layer = std::make_unique<MaxPool2D>(r);
  else if (type == "Flatten")
    layer = std::make_unique<Flatten>(r);
  else if (type == "Dropout")
    layer = std::make_unique<Dropout>(r);
  else if (type == "BatchNormalization")
    layer = std::make_unique<BatchNormalization>(r);
  else if (type == "ReLU" || type == "Softmax" || type == "Activation")
    layer = std::make_unique<ActivationLayer>(r, type);
  else
    throw_invalid(where + ": unknown layer type \"" + type + "\"",
                  "supported: Dense, Conv2D, MaxPool2D, Flatten, Dropout, BatchNormalization, ReLU, Softmax, "
                  "Activation");
  std::string name = r.string("name", "");
  r.finish();
  if (!name.empty()) {
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
        throw_invalid(loc + ": layer name \"" + name + "\" may only contain letters, digits, '_', '-' and '.'");
    layer->set_name(name);
  }
  return layer;
}

}  // namespace tandem

#include "export/tflite_quantize.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/errors.h"
#include "storage/raw_bytes.h"

namespace tandem::tfl {

namespace {

constexpr const char* kModes = "use --quantize none, float16, dynamic or int8";

int64_t per_sample(const Tensor& t) {  // elements of one sample of an activation (shape[0] is the batch)
  int64_t n = 1;
  for (size_t i = t.free_batch ? 1 : 0; i < t.shape.size(); ++i) n *= t.shape[i];
  return n;
}

int64_t elements(const Tensor& t) {
  int64_t n = 1;
  for (int32_t d : t.shape) n *= d;
  return n;
}

bool is_constant(const Tensor& t) { return t.buffer != 0; }

// ---- the float reference interpreter -------------------------------------------------------------

// SAME padding as TensorFlow computes it: the total split with the extra row at the bottom/right.
int64_t pad_before(int8_t padding, int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  if (padding != SAME) return 0;
  return std::max<int64_t>((out - 1) * stride + kernel - in, 0) / 2;
}

void fused(int8_t activation, float* x, int64_t n) {
  if (activation == FUSED_RELU)
    for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.f);
}

class Interpreter {
 public:
  explicit Interpreter(const Graph& g) : g_(g), constants_(g.tensors.size()) {
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      const Tensor& t = g.tensors[i];
      if (!is_constant(t)) continue;
      if (t.type == FLOAT32)
        constants_[i] = g.constant(static_cast<int32_t>(i));
      else if (t.type != INT32)
        throw_invalid("tensor '" + t.name + "' is not float32: run_float evaluates float graphs only",
                      "evaluate the graph build_graph returns, before quantization");
    }
  }

  // Runs `batch` samples; returns the values of every tensor (activations batch x per_sample).
  std::vector<std::vector<float>> run(const float* input, int64_t batch) {
    std::vector<std::vector<float>> v(g_.tensors.size());
    const Tensor& in = g_.tensors[static_cast<size_t>(g_.input)];
    v[static_cast<size_t>(g_.input)].assign(input, input + batch * per_sample(in));
    for (const Operator& op : g_.operators) {
      std::vector<float>& out = v[static_cast<size_t>(op.outputs[0])];
      out.assign(static_cast<size_t>(batch * per_sample(tensor(op.outputs[0]))), 0.f);
      const std::vector<float>& x = v[static_cast<size_t>(op.inputs[0])];
      switch (op.op) {
        case CONV_2D: conv(op, x, batch, out); break;
        case FULLY_CONNECTED: fully_connected(op, x, batch, out); break;
        case MAX_POOL_2D: max_pool(op, x, batch, out); break;
        case RESHAPE: out = x; break;
        case RELU:
          for (size_t i = 0; i < x.size(); ++i) out[i] = std::max(x[i], 0.f);
          break;
        case SOFTMAX: softmax(op, x, out); break;
        case ADD:
        case MUL: binary(op, x, operand(v, op.inputs[1]), out); break;
        default:
          throw_invalid(std::string("run_float has no float kernel for ") + (op_name(op.op) ? op_name(op.op) : "?"),
                        "the reference interpreter covers the operators build_graph writes");
      }
    }
    return v;
  }

 private:
  const Tensor& tensor(int32_t i) const { return g_.tensors[static_cast<size_t>(i)]; }
  const std::vector<float>& operand(const std::vector<std::vector<float>>& v, int32_t i) const {
    return is_constant(tensor(i)) ? constants_[static_cast<size_t>(i)] : v[static_cast<size_t>(i)];
  }
  const std::vector<float>& weights(int32_t i) const { return constants_[static_cast<size_t>(i)]; }

  void conv(const Operator& op, const std::vector<float>& x, int64_t batch, std::vector<float>& out) const {
    const Tensor &in = tensor(op.inputs[0]), &f = tensor(op.inputs[1]), &o = tensor(op.outputs[0]);
    const int64_t H = in.shape[1], W = in.shape[2], C = in.shape[3];
    const int64_t O = f.shape[0], KH = f.shape[1], KW = f.shape[2];
    const int64_t OH = o.shape[1], OW = o.shape[2], K = KH * KW * C;
    const int64_t top = pad_before(op.padding, H, OH, KH, op.stride_h), left = pad_before(op.padding, W, OW, KW, op.stride_w);
    std::vector<float> col(static_cast<size_t>(batch * OH * OW * K), 0.f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          float* row = col.data() + ((b * OH + oy) * OW + ox) * K;
          for (int64_t ky = 0; ky < KH; ++ky) {
            const int64_t iy = oy * op.stride_h + ky - top;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < KW; ++kx) {
              const int64_t ix = ox * op.stride_w + kx - left;
              if (ix < 0 || ix >= W) continue;
              std::memcpy(row + (ky * KW + kx) * C, x.data() + ((b * H + iy) * W + ix) * C,
                          static_cast<size_t>(C) * sizeof(float));
            }
          }
        }
    gemm_bias(batch * OH * OW, O, K, col.data(), op, out);
  }

  void fully_connected(const Operator& op, const std::vector<float>& x, int64_t batch, std::vector<float>& out) const {
    const Tensor& w = tensor(op.inputs[1]);
    gemm_bias(batch, w.shape[0], w.shape[1], x.data(), op, out);
  }

  // out[M, N] = a[M, K] * weights[N, K]^T + bias, then the fused activation.
  void gemm_bias(int64_t M, int64_t N, int64_t K, const float* a, const Operator& op, std::vector<float>& out) const {
    const std::vector<float>& w = weights(op.inputs[1]);
    TANDEM_ASSERT(static_cast<int64_t>(w.size()) == N * K && static_cast<int64_t>(out.size()) == M * N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(N),
                static_cast<blasint>(K), 1.f, a, static_cast<blasint>(K), w.data(), static_cast<blasint>(K), 0.f,
                out.data(), static_cast<blasint>(N));
    if (op.inputs.size() > 2 && op.inputs[2] >= 0) {
      const std::vector<float>& bias = weights(op.inputs[2]);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) out[static_cast<size_t>(m * N + n)] += bias[static_cast<size_t>(n)];
    }
    fused(op.activation, out.data(), M * N);
  }

  void max_pool(const Operator& op, const std::vector<float>& x, int64_t batch, std::vector<float>& out) const {
    const Tensor &in = tensor(op.inputs[0]), &o = tensor(op.outputs[0]);
    const int64_t H = in.shape[1], W = in.shape[2], C = in.shape[3], OH = o.shape[1], OW = o.shape[2];
    const int64_t top = pad_before(op.padding, H, OH, op.filter_h, op.stride_h);
    const int64_t left = pad_before(op.padding, W, OW, op.filter_w, op.stride_w);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox)
          for (int64_t c = 0; c < C; ++c) {
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t ky = 0; ky < op.filter_h; ++ky)
              for (int64_t kx = 0; kx < op.filter_w; ++kx) {
                const int64_t iy = oy * op.stride_h + ky - top, ix = ox * op.stride_w + kx - left;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) m = std::max(m, x[static_cast<size_t>(((b * H + iy) * W + ix) * C + c)]);
              }
            out[static_cast<size_t>(((b * OH + oy) * OW + ox) * C + c)] = m;
          }
    fused(op.activation, out.data(), static_cast<int64_t>(out.size()));
  }

  void softmax(const Operator& op, const std::vector<float>& x, std::vector<float>& out) const {
    const int64_t n = tensor(op.outputs[0]).shape.back();
    for (size_t r = 0; r + static_cast<size_t>(n) <= x.size(); r += static_cast<size_t>(n)) {
      const float m = *std::max_element(x.begin() + static_cast<std::ptrdiff_t>(r), x.begin() + static_cast<std::ptrdiff_t>(r + static_cast<size_t>(n)));
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += out[r + static_cast<size_t>(i)] = std::exp(x[r + static_cast<size_t>(i)] - m);
      for (int64_t i = 0; i < n; ++i) out[r + static_cast<size_t>(i)] = static_cast<float>(out[r + static_cast<size_t>(i)] / sum);
    }
  }

  // ADD / MUL with the second operand broadcast over the leading dimensions (a per-channel constant).
  void binary(const Operator& op, const std::vector<float>& x, const std::vector<float>& y, std::vector<float>& out) const {
    TANDEM_ASSERT(!y.empty() && x.size() % y.size() == 0);
    for (size_t i = 0; i < x.size(); ++i) out[i] = op.op == ADD ? x[i] + y[i % y.size()] : x[i] * y[i % y.size()];
    fused(op.activation, out.data(), static_cast<int64_t>(out.size()));
  }

  const Graph& g_;
  std::vector<std::vector<float>> constants_;
};

// ---- quantization --------------------------------------------------------------------------------

// Symmetric int8 per output channel (dimension 0): scale = max |w| / 127, q in [-127, 127].
std::string quantize_weights(Tensor& t, const std::vector<float>& w) {
  const int64_t channels = t.shape.at(0);
  const size_t per = w.size() / static_cast<size_t>(channels);
  std::string bytes(w.size(), '\0');
  t.type = INT8;
  t.quantization = Quantization{};
  for (int64_t c = 0; c < channels; ++c) {
    float m = 0.f;
    for (size_t k = 0; k < per; ++k) m = std::max(m, std::fabs(w[static_cast<size_t>(c) * per + k]));
    const float scale = m > 0.f ? m / 127.f : 1.f;
    for (size_t k = 0; k < per; ++k) {
      const size_t i = static_cast<size_t>(c) * per + k;
      const long q = std::lround(w[i] / scale);
      bytes[i] = static_cast<char>(static_cast<int8_t>(std::clamp<long>(q, -127, 127)));
    }
    t.quantization.scale.push_back(scale);
    t.quantization.zero_point.push_back(0);
  }
  return bytes;
}

Quantization per_tensor(const AffineParams& p) { return Quantization{{p.scale}, {p.zero_point}, 0}; }

class Quantizer {
 public:
  Quantizer(const Graph& g, const QuantizeOptions& o) : g_(g), o_(o) {}

  Graph run() {
    switch (o_.mode) {
      case QuantizeMode::None: break;
      case QuantizeMode::Float16: float16(); break;
      case QuantizeMode::Dynamic: dynamic(); break;
      case QuantizeMode::Int8: int8(); break;
    }
    return std::move(g_);
  }

 private:
  Tensor& tensor(int32_t i) { return g_.tensors[static_cast<size_t>(i)]; }
  std::string& buffer_of(int32_t i) { return g_.buffers[tensor(i).buffer]; }
  int32_t add_tensor(Tensor t) {
    g_.tensors.push_back(std::move(t));
    return static_cast<int32_t>(g_.tensors.size() - 1);
  }
  static Operator make(int32_t code, int32_t in, int32_t out, int32_t version) {
    Operator op;
    op.op = code;
    op.inputs = {in};
    op.outputs = {out};
    op.version = version;
    return op;
  }

  void float16() {
    std::vector<Operator> dequantize;
    for (Operator& op : g_.operators)
      for (size_t k = 1; k < op.inputs.size(); ++k) {
        const int32_t c = op.inputs[k];
        if (c < 0 || !is_constant(tensor(c)) || tensor(c).type != FLOAT32) continue;  // a RESHAPE's shape: int32
        const std::vector<float> values = g_.constant(c);
        std::string half(values.size() * 2, '\0');
        for (size_t i = 0; i < values.size(); ++i) {
          const uint16_t h = float_to_half(values[i]);
          std::memcpy(&half[2 * i], &h, 2);  // little-endian hosts only (as the writers)
        }
        buffer_of(c) = std::move(half);
        tensor(c).type = FLOAT16;
        Tensor f32;
        f32.name = tensor(c).name + "/dequantize";
        f32.shape = tensor(c).shape;
        const int32_t d = add_tensor(std::move(f32));
        dequantize.push_back(make(DEQUANTIZE, c, d, 3));
        op.inputs[k] = d;
      }
    g_.operators.insert(g_.operators.begin(), dequantize.begin(), dequantize.end());
  }

  void dynamic() {
    for (Operator& op : g_.operators) {
      if (op.op != CONV_2D && op.op != FULLY_CONNECTED) continue;
      const int32_t w = op.inputs[1];
      if (elements(tensor(w)) < kDynamicMinElements) continue;  // TF keeps small weights float
      buffer_of(w) = quantize_weights(tensor(w), g_.constant(w));
      if (op.op == CONV_2D) {
        op.version = 5;  // hybrid, per-channel
      } else {
        op.version = 12;  // hybrid, per-channel, asymmetric inputs
        op.asymmetric_quantize_inputs = true;
      }
    }
  }

  void int8() {
    const Tensor& in = g_.tensors[static_cast<size_t>(g_.input)];
    const int64_t sample = per_sample(in);
    const int64_t n = static_cast<int64_t>(o_.calibration.size()) / sample;
    if (o_.calibration.size() % static_cast<size_t>(sample) != 0)
      throw_invalid("the calibration images do not match the model's input (" + std::to_string(sample) +
                        " values per image)",
                    "calibrate with images of the model's input shape");
    if (n < kMinCalibrationSamples)
      throw_invalid("int8 quantization needs at least " + std::to_string(kMinCalibrationSamples) +
                        " calibration images, got " + std::to_string(n),
                    "pass --calibration-samples N with N >= " + std::to_string(kMinCalibrationSamples) +
                        " (default " + std::to_string(kDefaultCalibrationSamples) + "; TF suggests 100 to 500)");
    for (const Operator& op : g_.operators)
      if (op.op != CONV_2D && op.op != FULLY_CONNECTED && op.op != MAX_POOL_2D && op.op != RESHAPE &&
          op.op != RELU && op.op != SOFTMAX && op.op != ADD && op.op != MUL)
        throw_invalid(std::string("operator ") + (op_name(op.op) ? op_name(op.op) : std::to_string(op.op).c_str()) +
                          " (writing '" + tensor(op.outputs[0]).name + "') has no int8 kernel in Tandem's quantizer",
                      "export this model with --quantize none, float16 or dynamic");
    std::vector<Range> ranges;
    run_float(g_, o_.calibration, n, &ranges);
    auto range_params = [&](int32_t t) {
      return per_tensor(asymmetric_int8(ranges[static_cast<size_t>(t)].min, ranges[static_cast<size_t>(t)].max));
    };

    const int32_t input = g_.input, output = g_.output;
    tensor(input).quantization = range_params(input);
    for (Operator& op : g_.operators) {
      const int32_t x = op.inputs[0], y = op.outputs[0];
      Tensor& out = tensor(y);
      switch (op.op) {
        case CONV_2D:
        case FULLY_CONNECTED: {
          const int32_t w = op.inputs[1], b = op.inputs[2];
          buffer_of(w) = quantize_weights(tensor(w), g_.constant(w));
          const std::vector<float> bias = g_.constant(b);
          const float in_scale = tensor(x).quantization.scale.at(0);
          std::vector<int32_t> q(bias.size());
          Quantization bq;
          for (size_t c = 0; c < bias.size(); ++c) {
            const double scale = static_cast<double>(in_scale) * tensor(w).quantization.scale[c];
            const double v = std::round(bias[c] / scale);
            q[c] = static_cast<int32_t>(std::clamp(v, -2147483647.0, 2147483647.0));
            bq.scale.push_back(static_cast<float>(scale));
            bq.zero_point.push_back(0);
          }
          buffer_of(b) = int32_bytes(q);
          tensor(b).type = INT32;
          tensor(b).quantization = bq;
          out.quantization = range_params(y);
          op.version = op.op == CONV_2D ? 3 : 4;
          break;
        }
        case MAX_POOL_2D:
        case RESHAPE:  // the int8 kernels move values without rescaling: the input's parameters
          out.quantization = tensor(x).quantization;
          op.version = op.op == MAX_POOL_2D ? 2 : 1;
          break;
        case SOFTMAX:  // the int8 kernel's fixed output parameters
          out.quantization = Quantization{{1.f / 256.f}, {-128}, 0};
          op.version = 2;
          break;
        default: {  // ADD, MUL (a per-channel constant), RELU
          if (op.op != RELU) {
            const int32_t c = op.inputs[1];
            const std::vector<float> values = g_.constant(c);
            const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
            const AffineParams p = asymmetric_int8(*lo, *hi);
            std::string bytes(values.size(), '\0');
            for (size_t i = 0; i < values.size(); ++i)
              bytes[i] = static_cast<char>(static_cast<int8_t>(
                  std::clamp<long>(std::lround(values[i] / p.scale) + p.zero_point, -128, 127)));
            buffer_of(c) = std::move(bytes);
            tensor(c).type = INT8;
            tensor(c).quantization = per_tensor(p);
          }
          out.quantization = range_params(y);
          op.version = 2;
          break;
        }
      }
      tensor(y).type = INT8;
    }

    if (o_.int8_io) {
      tensor(input).type = INT8;
      return;
    }
    // Float at the edges: QUANTIZE the input, DEQUANTIZE the output.
    Tensor q_in = tensor(input);
    q_in.name = tensor(input).name + "/quantize";
    q_in.type = INT8;
    tensor(input).quantization = Quantization{};
    const int32_t qi = add_tensor(std::move(q_in));
    for (Operator& op : g_.operators)
      for (int32_t& i : op.inputs)
        if (i == input) i = qi;
    g_.operators.insert(g_.operators.begin(), make(QUANTIZE, input, qi, 1));
    Tensor f_out = tensor(output);
    f_out.type = FLOAT32;
    f_out.quantization = Quantization{};
    tensor(output).name += "/int8";
    const int32_t fo = add_tensor(std::move(f_out));
    g_.operators.push_back(make(DEQUANTIZE, output, fo, 2));
    g_.output = fo;
  }

  Graph g_;
  const QuantizeOptions& o_;
};

}  // namespace

QuantizeMode parse_quantize_mode(const std::string& text) {
  if (text == "none") return QuantizeMode::None;
  if (text == "float16") return QuantizeMode::Float16;
  if (text == "dynamic") return QuantizeMode::Dynamic;
  if (text == "int8") return QuantizeMode::Int8;
  throw_invalid("unknown --quantize '" + text + "'", kModes);
}

const char* quantize_mode_name(QuantizeMode mode) {
  switch (mode) {
    case QuantizeMode::Float16: return "float16";
    case QuantizeMode::Dynamic: return "dynamic";
    case QuantizeMode::Int8: return "int8";
    default: return "none";
  }
}

Graph quantize(const Graph& float_graph, const QuantizeOptions& options) {
  if (options.int8_io && options.mode != QuantizeMode::Int8)
    throw_invalid("--int8-io needs --quantize int8", "add --quantize int8, or drop --int8-io");
  return Quantizer(float_graph, options).run();
}

std::vector<float> run_float(const Graph& graph, const std::vector<float>& input, int64_t batch,
                             std::vector<Range>* ranges) {
  Interpreter interp(graph);
  const int64_t in_elems = per_sample(graph.tensors.at(static_cast<size_t>(graph.input)));
  const int64_t out_elems = per_sample(graph.tensors.at(static_cast<size_t>(graph.output)));
  if (batch < 0 || static_cast<int64_t>(input.size()) != batch * in_elems)
    throw_invalid("run_float: " + std::to_string(input.size()) + " input values for " + std::to_string(batch) +
                  " samples of " + std::to_string(in_elems));
  if (ranges) {
    ranges->assign(graph.tensors.size(), Range{});
    for (size_t i = 0; i < graph.tensors.size(); ++i)
      if (!is_constant(graph.tensors[i]))
        (*ranges)[i] = Range{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  }
  std::vector<float> out;
  out.reserve(static_cast<size_t>(batch * out_elems));
  constexpr int64_t kChunk = 32;  // bounds the im2col buffer (32 x 14 x 14 x 1152 floats for the cnn)
  for (int64_t b0 = 0; b0 < batch; b0 += kChunk) {
    const int64_t nb = std::min(kChunk, batch - b0);
    const std::vector<std::vector<float>> v = interp.run(input.data() + b0 * in_elems, nb);
    const std::vector<float>& y = v[static_cast<size_t>(graph.output)];
    out.insert(out.end(), y.begin(), y.end());
    if (ranges)
      for (size_t i = 0; i < v.size(); ++i)
        for (float f : v[i]) {
          (*ranges)[i].min = std::min((*ranges)[i].min, f);
          (*ranges)[i].max = std::max((*ranges)[i].max, f);
        }
  }
  if (ranges)
    for (Range& r : *ranges)
      if (r.min > r.max) r = Range{};  // no samples
  return out;
}

uint16_t float_to_half(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mant = x & 0x7fffffu;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu);
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));  // inf, NaN
  const int32_t e = exp - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // too large: infinity
  if (e <= 0) {                                                // a half subnormal, or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t h = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;  // may carry into the smallest normal: correct
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent, up to infinity
  return static_cast<uint16_t>(h);
}

AffineParams asymmetric_int8(float min, float max) {
  min = std::min(min, 0.f);
  max = std::max(max, 0.f);
  if (!(max > min)) return AffineParams{1.f / 255.f, -128};  // an all-zero tensor: any scale holds 0 exactly
  const double scale = (static_cast<double>(max) - min) / 255.0;
  const double zero_from_min = -128.0 - min / scale;
  const int64_t zp = zero_from_min <= -128.0  ? -128
                     : zero_from_min >= 127.0 ? 127
                                              : static_cast<int64_t>(std::round(zero_from_min));
  return AffineParams{static_cast<float>(scale), zp};
}

}  // namespace tandem::tfl

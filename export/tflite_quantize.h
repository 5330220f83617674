// Post-training quantization of the TensorFlow Lite graph (export/tflite_writer.h), as TF's
// TFLiteConverter does it with `optimizations = [tf.lite.Optimize.DEFAULT]` (TF 2.21, whose output
// this mirrors tensor for tensor: types, per-channel axes, op versions):
//
//   float16  every float constant (weights, biases, BatchNormalization's scale and shift) stored as
//            FLOAT16, each read through a DEQUANTIZE (version 3) at the start of the graph: half the
//            size, float32 arithmetic.
//   dynamic  the weights of CONV_2D and FULLY_CONNECTED with at least kDynamicMinElements elements as
//            int8, symmetric per output channel (quantized_dimension 0, zero point 0, [-127, 127]);
//            biases and activations stay float. The kernels' hybrid paths quantize each input on the
//            fly: CONV_2D version 5, FULLY_CONNECTED version 12 with asymmetric_quantize_inputs.
//   int8     full-integer: weights as above (every CONV_2D/FULLY_CONNECTED), int32 biases with scale
//            input scale x weight scale per channel, int8 activations per tensor (asymmetric, range
//            from calibration), MUL/ADD constants int8 per tensor. QUANTIZE after the float input and
//            DEQUANTIZE before the float output, or with `int8_io` an int8 input and output. MAX_POOL_2D
//            and RESHAPE keep their input's parameters and SOFTMAX writes scale 1/256, zero point -128,
//            as the int8 kernels require. Versions: CONV_2D 3, FULLY_CONNECTED 4, MAX_POOL_2D 2,
//            SOFTMAX 2, ADD 2, MUL 2, RELU 2, QUANTIZE 1, DEQUANTIZE 2.
//
// Calibration (int8) runs the float graph over the calibration images (x / 255, NHWC) with a float
// reference interpreter of its own (run_float) and keeps every activation's overall minimum and
// maximum, as TF's calibrator does: no percentile clipping of outliers, so a rare large activation
// widens its tensor's scale for every input (the trade TF makes too). Ranges are widened to include
// 0, and the scale and zero point follow TF's asymmetric rule:
//   scale = (max - min) / 255, zero_point = clamp(round(-128 - min / scale), -128, 127).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "export/tflite_writer.h"

namespace tandem::tfl {

enum class QuantizeMode { None, Float16, Dynamic, Int8 };

// "none", "float16", "dynamic", "int8". Throws InvalidArgument with a hint for anything else.
QuantizeMode parse_quantize_mode(const std::string& text);
const char* quantize_mode_name(QuantizeMode mode);

constexpr int64_t kDynamicMinElements = 1024;  // smaller weights stay float in dynamic mode (as TF's)
constexpr int64_t kMinCalibrationSamples = 100;
constexpr int64_t kDefaultCalibrationSamples = 500;

struct QuantizeOptions {
  QuantizeMode mode = QuantizeMode::None;
  bool int8_io = false;            // int8 only: integer input and output tensors
  std::vector<float> calibration;  // int8 only: images as the model's input, x / 255, NHWC, back to back
};

// The quantized graph. Throws InvalidArgument: int8 with fewer than kMinCalibrationSamples images or
// with images that do not match the input's shape; int8_io without int8; an operator the quantizer has
// no quantized kernel for (naming it and its output).
Graph quantize(const Graph& float_graph, const QuantizeOptions& options);

// The float graph evaluated on `batch` inputs (`input`: batch x the input's per-sample elements),
// returning the output (batch x classes). With `ranges`, also every tensor's minimum and maximum over
// all the inputs (indexed as graph.tensors; {0, 0} for constants). Only float32 graphs (as build_graph
// makes them). Runs CONV_2D as im2col + one sgemm per chunk of the batch.
struct Range {
  float min = 0.f, max = 0.f;
};
std::vector<float> run_float(const Graph& graph, const std::vector<float>& input, int64_t batch,
                             std::vector<Range>* ranges = nullptr);

// IEEE 754 binary16 bits of `value`, rounded to nearest even (overflow to infinity, subnormals kept).
uint16_t float_to_half(float value);

// TF's asymmetric int8 parameters for the real range [min, max] (widened to include 0 first).
struct AffineParams {
  float scale = 1.f;
  int64_t zero_point = 0;
};
AffineParams asymmetric_int8(float min, float max);

}  // namespace tandem::tfl

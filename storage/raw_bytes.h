// Bytes the format writers and readers share: tensors as little-endian raw bytes (TensorFlow's
// tensor_content, ONNX's raw_data, TFLite buffers, TF.js shards), and names read from a file made
// safe to show.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

std::string float_bytes(const std::vector<float>& values);
std::string int32_bytes(const std::vector<int32_t>& values);
std::string int64_bytes(const std::vector<int64_t>& values);

// A string from a file, safe to show and to put in JSON: printable ASCII is kept, any other byte
// becomes "\xNN" (names in files Tandem did not write may hold anything, even invalid UTF-8).
std::string printable(std::string_view bytes);

}  // namespace tandem

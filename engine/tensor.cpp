#include "engine/tensor.h"

#include <cstdlib>

#include "engine/errors.h"

namespace tandem {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "unknown";
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += dims[i] < 0 ? std::string("None") : std::to_string(dims[i]);
  }
  if (dims.size() == 1) s += ",";
  return s + ")";
}

Shape Shape::with_batch(int64_t n) const {
  Shape s;
  s.dims.reserve(dims.size() + 1);
  s.dims.push_back(n);
  s.dims.insert(s.dims.end(), dims.begin(), dims.end());
  return s;
}

std::string Device::str() const { return std::string(kind == DeviceKind::Cpu ? "cpu:" : "gpu:") + std::to_string(index); }

Device Device::parse(const std::string& text) {
  Device d;
  std::string kind = text, idx = "0";
  auto colon = text.find(':');
  if (colon != std::string::npos) {
    kind = text.substr(0, colon);
    idx = text.substr(colon + 1);
  }
  if (kind == "cpu") {
    d.kind = DeviceKind::Cpu;
  } else if (kind == "gpu" || kind == "cuda") {
    d.kind = DeviceKind::Gpu;
  } else if (kind == "tpu") {
    throw_invalid("device '" + text + "': TPUs are not supported by Tandem", "use --device cpu or --device gpu:N");
  } else {
    throw_invalid("unknown device '" + text + "'", "write cpu, cpu:N or gpu:N");
  }
  char* end = nullptr;
  long v = std::strtol(idx.c_str(), &end, 10);
  if (idx.empty() || *end != '\0' || v < 0 || v > 1023)
    throw_invalid("device '" + text + "' has a bad index '" + idx + "'", "write e.g. gpu:0");
  d.index = static_cast<int>(v);
  return d;
}

}  // namespace tandem

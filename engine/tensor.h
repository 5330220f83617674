// Shape, DType and Device: the vocabulary shared by layers, backends and file formats.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

enum class DType : uint8_t { F32 = 1, I32 = 2, U8 = 3 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

// Dimensions of a tensor, outermost first (TensorFlow order: NHWC activations, HWIO filters).
struct Shape {
  std::vector<int64_t> dims;
  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims(d) {}
  explicit Shape(std::vector<int64_t> d) : dims(std::move(d)) {}
  size_t rank() const { return dims.size(); }
  int64_t operator[](size_t i) const { return dims[i]; }
  int64_t numel() const;
  std::string str() const;  // "(28, 28, 1)"
  bool operator==(const Shape& o) const { return dims == o.dims; }
  bool operator!=(const Shape& o) const { return dims != o.dims; }
  Shape with_batch(int64_t n) const;  // prepends a batch dimension
};

enum class DeviceKind { Cpu, Gpu };
struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;
  std::string str() const;  // "cpu:0", "gpu:1"
  static Device parse(const std::string& text);  // throws InvalidArgument
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
};

}  // namespace tandem

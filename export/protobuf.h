// A small hand-written protobuf wire-format encoder, and a bounds-checked reader for one message's fields.
//
// Why hand-written rather than libprotobuf: the SavedModel and ONNX writers emit a handful of message
// types, all from C++ structs Tandem controls, and the wire format they need is tiny (varints, length-
// delimited fields, fixed32/64, packed repeated scalars, nested messages): a few dozen lines. That
// keeps protoc, generated code, vendored .proto files and a libprotobuf version (which must not clash
// with the copy inside TensorFlow or onnxruntime) out of the build, and the output is deterministic
// byte for byte: fields are written in the order the writers call them (field-number order) and
// maps in sorted key order, so the same model always exports to the same bytes.
//
// Encoding rules followed here (https://protobuf.dev/programming-guides/encoding/):
//   tag = (field_number << 3) | wire_type; varints are little-endian base-128;
//   int32/int64 are written as 64-bit two's complement varints, so a negative value takes 10 bytes;
//   float/double are fixed32/fixed64 little-endian; strings, bytes, nested messages and packed
//   repeated scalars are length-delimited; a map<K, V> is a repeated message {key = 1, value = 2}.
// The writer never skips a field: callers decide what to omit (proto3 defaults), and a oneof member
// or an empty nested message is written when called (its presence matters).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::proto {

enum class WireType : uint8_t { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

void append_varint(std::string& out, uint64_t value);
size_t varint_size(uint64_t value);

class Writer {
 public:
  Writer& uint(uint32_t field, uint64_t value);  // uint32, uint64, enums
  Writer& int64(uint32_t field, int64_t value);  // int32, int64 (negative: 10 bytes)
  Writer& boolean(uint32_t field, bool value);
  Writer& fixed32(uint32_t field, uint32_t value);
  Writer& fixed64(uint32_t field, uint64_t value);
  Writer& float32(uint32_t field, float value);
  Writer& float64(uint32_t field, double value);
  Writer& bytes(uint32_t field, std::string_view value);  // string and bytes
  Writer& message(uint32_t field, const Writer& nested);  // nested message (written even when empty)
  // Packed repeated scalars (proto3's default for repeated numeric fields). Nothing is written for
  // an empty list, as protobuf does.
  Writer& packed_int64(uint32_t field, const std::vector<int64_t>& values);
  Writer& packed_float(uint32_t field, const std::vector<float>& values);
  // Unpacked repeated int64 (proto2's default, e.g. ONNX's dims and ints): one tagged varint each.
  Writer& repeated_int64(uint32_t field, const std::vector<int64_t>& values);

  const std::string& data() const { return buf_; }
  size_t size() const { return buf_.size(); }
  std::string take() { return std::move(buf_); }

 private:
  void tag(uint32_t field, WireType type);
  std::string buf_;
};

// Little-endian raw bytes of float32 values (TensorFlow's tensor_content, ONNX's raw_data).
std::string float_bytes(const std::vector<float>& values);
std::string int32_bytes(const std::vector<int32_t>& values);
std::string int64_bytes(const std::vector<int64_t>& values);

// ---- reading -------------------------------------------------------------------------------------
// One field of a message as it appears on the wire. For Bytes fields `bytes` views into the parsed
// buffer (which must outlive it); for the others `value` holds the raw varint / fixed bits.
struct Field {
  uint32_t number = 0;
  WireType type = WireType::Varint;
  uint64_t value = 0;
  std::string_view bytes;

  int64_t as_int64() const { return static_cast<int64_t>(value); }
  float as_float() const;  // a Fixed32 field
};

// The fields of one message, in wire order. Throws Error(Data) naming `where` and the byte offset for
// truncated or malformed input (bad tag, wire type 3/4/6/7, varint over 10 bytes, length past the end).
std::vector<Field> parse_message(std::string_view data, const std::string& where);
// The values of a packed repeated varint field (also accepts what one unpacked element holds).
std::vector<int64_t> unpack_varints(std::string_view data, const std::string& where);
// Every value of a repeated int64 field `number` in `fields`, packed or not.
std::vector<int64_t> repeated_int64(const std::vector<Field>& fields, uint32_t number, const std::string& where);
// A string field's bytes made safe to show and to put in JSON: printable ASCII is kept, any other
// byte becomes "\xNN" (names in files Tandem did not write may hold anything, even invalid UTF-8).
std::string printable(std::string_view bytes);
// The last occurrence of field `number` (protobuf's rule for singular fields), or nullptr.
const Field* find_field(const std::vector<Field>& fields, uint32_t number);

}  // namespace tandem::proto

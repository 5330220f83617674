#include "export/protobuf.h"

#include <cstring>

#include "engine/errors.h"

namespace tandem::proto {

void append_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

size_t varint_size(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

void Writer::tag(uint32_t field, WireType type) {
  TANDEM_ASSERT(field >= 1 && field <= (1u << 29) - 1);
  append_varint(buf_, (uint64_t{field} << 3) | static_cast<uint64_t>(type));
}

Writer& Writer::uint(uint32_t field, uint64_t value) {
  tag(field, WireType::Varint);
  append_varint(buf_, value);
  return *this;
}

Writer& Writer::int64(uint32_t field, int64_t value) { return uint(field, static_cast<uint64_t>(value)); }

Writer& Writer::boolean(uint32_t field, bool value) { return uint(field, value ? 1 : 0); }

Writer& Writer::fixed32(uint32_t field, uint32_t value) {
  tag(field, WireType::Fixed32);
  for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return *this;
}

Writer& Writer::fixed64(uint32_t field, uint64_t value) {
  tag(field, WireType::Fixed64);
  for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return *this;
}

Writer& Writer::float32(uint32_t field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return fixed32(field, bits);
}

Writer& Writer::float64(uint32_t field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return fixed64(field, bits);
}

Writer& Writer::bytes(uint32_t field, std::string_view value) {
  tag(field, WireType::Bytes);
  append_varint(buf_, value.size());
  buf_.append(value.data(), value.size());
  return *this;
}

Writer& Writer::message(uint32_t field, const Writer& nested) { return bytes(field, nested.data()); }

Writer& Writer::packed_int64(uint32_t field, const std::vector<int64_t>& values) {
  if (values.empty()) return *this;
  std::string body;
  for (int64_t v : values) append_varint(body, static_cast<uint64_t>(v));
  return bytes(field, body);
}

Writer& Writer::packed_float(uint32_t field, const std::vector<float>& values) {
  if (values.empty()) return *this;
  return bytes(field, float_bytes(values));
}

Writer& Writer::repeated_int64(uint32_t field, const std::vector<int64_t>& values) {
  for (int64_t v : values) int64(field, v);
  return *this;
}

namespace {
template <typename T, typename U>
std::string le_bytes(const std::vector<T>& values) {
  std::string out;
  out.reserve(values.size() * sizeof(T));
  for (T v : values) {
    U bits;
    std::memcpy(&bits, &v, sizeof(bits));
    for (size_t i = 0; i < sizeof(U); ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return out;
}
}  // namespace

std::string float_bytes(const std::vector<float>& values) { return le_bytes<float, uint32_t>(values); }
std::string int32_bytes(const std::vector<int32_t>& values) { return le_bytes<int32_t, uint32_t>(values); }
std::string int64_bytes(const std::vector<int64_t>& values) { return le_bytes<int64_t, uint64_t>(values); }

float Field::as_float() const {
  const uint32_t bits = static_cast<uint32_t>(value);
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

namespace {

class Cursor {
 public:
  Cursor(std::string_view data, const std::string& where) : data_(data), where_(where) {}
  bool done() const { return pos_ >= data_.size(); }
  [[noreturn]] void fail(const std::string& what) const {
    throw_data(where_ + ": malformed protobuf at byte " + std::to_string(pos_) + ": " + what,
               "the file is truncated or was not written by a protobuf encoder; re-export the model");
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos_ >= data_.size()) fail("truncated varint");
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      if (shift == 63 && (b & 0x7e)) fail("varint does not fit 64 bits");
      v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  uint64_t fixed(size_t n) {
    if (data_.size() - pos_ < n) fail("truncated fixed" + std::to_string(8 * n) + " value");
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(data_[pos_ + i])} << (8 * i);
    pos_ += n;
    return v;
  }
  std::string_view take(uint64_t n) {
    if (n > data_.size() - pos_)
      fail("length " + std::to_string(n) + " runs past the end (" + std::to_string(data_.size() - pos_) +
           " bytes left)");
    std::string_view s = data_.substr(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  std::string_view data_;
  const std::string& where_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<Field> parse_message(std::string_view data, const std::string& where) {
  std::vector<Field> fields;
  Cursor c(data, where);
  while (!c.done()) {
    const uint64_t key = c.varint();
    Field f;
    const uint64_t number = key >> 3;
    if (number == 0 || number > (1u << 29) - 1) c.fail("invalid field number " + std::to_string(number));
    f.number = static_cast<uint32_t>(number);
    switch (key & 7) {
      case 0:
        f.type = WireType::Varint;
        f.value = c.varint();
        break;
      case 1:
        f.type = WireType::Fixed64;
        f.value = c.fixed(8);
        break;
      case 2:
        f.type = WireType::Bytes;
        f.bytes = c.take(c.varint());
        break;
      case 5:
        f.type = WireType::Fixed32;
        f.value = c.fixed(4);
        break;
      default: c.fail("unsupported wire type " + std::to_string(key & 7) + " (field " + std::to_string(number) + ")");
    }
    fields.push_back(f);
  }
  return fields;
}

std::vector<int64_t> unpack_varints(std::string_view data, const std::string& where) {
  std::vector<int64_t> out;
  Cursor c(data, where);
  while (!c.done()) out.push_back(static_cast<int64_t>(c.varint()));
  return out;
}

std::vector<int64_t> repeated_int64(const std::vector<Field>& fields, uint32_t number, const std::string& where) {
  std::vector<int64_t> out;
  for (const Field& f : fields) {
    if (f.number != number) continue;
    if (f.type == WireType::Varint) {
      out.push_back(f.as_int64());
    } else if (f.type == WireType::Bytes) {
      for (int64_t v : unpack_varints(f.bytes, where)) out.push_back(v);
    } else {
      throw_data(where + ": field " + std::to_string(number) + " should hold integers but has a fixed-width value",
                 "the file was not written for this schema; re-export the model");
    }
  }
  return out;
}

std::string printable(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
  }
  return out;
}

const Field* find_field(const std::vector<Field>& fields, uint32_t number) {
  const Field* found = nullptr;
  for (const Field& f : fields)
    if (f.number == number) found = &f;
  return found;
}

}  // namespace tandem::proto

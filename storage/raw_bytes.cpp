#include "storage/raw_bytes.h"

#include <cstring>

namespace tandem {

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

}  // namespace tandem

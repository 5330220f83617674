// IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed, with strict validation:
// magic, type byte, dimension count, overflow-safe sizes, exact file length.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

struct IdxArray {
  std::vector<uint32_t> dims;  // outermost first
  std::vector<uint8_t> data;   // row-major payload (only unsigned-byte arrays are supported)
};

// Reads `path` (gzip is detected by its magic bytes, not by the name). `expected_rank` is the
// number of dimensions the caller needs (3 for images, 1 for labels); 0 accepts any rank.
// Throws Error(Io) when the file cannot be read, Error(Data) naming the file and the byte offset
// for every malformation.
IdxArray read_idx(const std::string& path, uint32_t expected_rank = 0);

// Writes an unsigned-byte IDX file (used by tests and tools); gzip-compressed when `gzip` is true.
void write_idx(const std::string& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
               bool gzip);

}  // namespace tandem

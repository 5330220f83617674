// The native weights file: magic, format version, a table of tensors (name, dtype, shape,
// offset, size, CRC32C) and little-endian raw data. Every read verifies every checksum.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/checksum.h"
#include "engine/named_tensor.h"

namespace tandem {

// Writes `path` in full, flushes and fsyncs it. Does not rename: callers commit atomically.
void write_weights_file(const std::string& path, const std::vector<NamedTensor>& tensors);
// Throws Error(Io) if unreadable, Error(Data) naming the file (and the tensor) for bad magic, an
// unknown format version, a truncated file, inconsistent tables or a checksum mismatch.
std::vector<NamedTensor> read_weights_file(const std::string& path);

}  // namespace tandem

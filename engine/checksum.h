// CRC32C, the Castagnoli CRC (reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF), computed
// slice-by-8; crc32c("123456789") == 0xE3069283. Used by the weights file and checkpoints (storage),
// TensorBoard's records, and the ranks' start-up agreement (dist/).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tandem {

// Continues `crc` (0 to start) over `size` bytes.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace tandem

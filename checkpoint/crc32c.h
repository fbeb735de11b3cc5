// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum a checkpoint records for
// every piece. Chosen over CRC32 because x86 (SSE4.2) and ARMv8 compute it in hardware, so
// checking a multi-GB checkpoint costs little more than reading it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sy {

// The CRC32C of `n` bytes; pass a previous result as `crc` to continue over a following block
// (crc32c(b, crc32c(a)) == crc32c(a ++ b)). crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// The table-driven version, always compiled: the reference the hardware path is tested against.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace sy

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and ext4; the all-reduce frames
// carry it over their payload. Uses the SSE4.2 crc32 instruction when the CPU has it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace covenant {

// crc32c(data) == crc32c_extend(0, data); extend lets a payload be checksummed in pieces.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len);
inline uint32_t crc32c(const void* data, size_t len) { return crc32c_extend(0, data, len); }

}  // namespace covenant

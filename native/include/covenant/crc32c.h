// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and ext4; the all-reduce frames
// carry it over their payload. Uses AVX-512 carry-less multiplication (VPCLMULQDQ) or the SSE4.2 crc32
// instruction when the CPU has them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace covenant {

// crc32c(data) == crc32c_extend(0, data); extend lets a payload be checksummed in pieces.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len);
inline uint32_t crc32c(const void* data, size_t len) { return crc32c_extend(0, data, len); }

// One implementation by name, for tests and benches (Auto: the best this CPU has; one it lacks runs Portable).
enum class Crc32cImpl { Auto, Portable, Sse42, Vpclmul };
uint32_t crc32c_extend_with(Crc32cImpl impl, uint32_t crc, const void* data, size_t len);
bool crc32c_impl_supported(Crc32cImpl impl);
const char* crc32c_impl_name(Crc32cImpl impl);

}  // namespace covenant

// CRC-32C: a byte-wise table (portable) and the SSE4.2 instruction (8 bytes per step) chosen at run time.
#include "covenant/crc32c.h"

#include <nmmintrin.h>

#include <cstring>

namespace covenant {

namespace {

struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
  }
};

uint32_t extend_portable(uint32_t crc, const uint8_t* p, size_t len) {
  static const Table table;
  crc = ~crc;
  for (size_t i = 0; i < len; ++i) crc = table.t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

__attribute__((target("sse4.2"))) uint32_t extend_sse42(uint32_t crc, const uint8_t* p, size_t len) {
  uint64_t c = ~crc;
  while (len >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = uint32_t(c);
  while (len--) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

}  // namespace

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len) {
  static const bool hw = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
  }();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  return hw ? extend_sse42(crc, p, len) : extend_portable(crc, p, len);
}

}  // namespace covenant

// CRC-32C: a byte-wise table (portable) and the SSE4.2 instruction chosen at run time. The crc32
// instruction has a latency of three cycles but a throughput of one, so large buffers run three
// independent chains over three thirds and join them: the CRC register is linear, so a chain's state moves
// across n zero bytes by a multiplication with x^(8n) mod P (carry-less, in the reflected bit order).
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

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

// a * b mod P, both in reflected order (bit 31 is x^0).
uint32_t mul_mod_p(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// x^(8n) mod P: square-and-multiply over the bits of 8n.
uint32_t x_pow_8n(size_t n) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 30;   // x^1
  for (uint64_t e = uint64_t(n) * 8; e != 0; e >>= 1) {
    if (e & 1) result = mul_mod_p(result, power);
    power = mul_mod_p(power, power);
  }
  return result;
}

__attribute__((target("sse4.2"))) uint64_t raw_chain(uint64_t c, const uint8_t* p, size_t len) {
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = uint32_t(c);
  while (len--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

__attribute__((target("sse4.2"))) uint32_t extend_sse42(uint32_t crc, const uint8_t* p, size_t len) {
  uint64_t c = uint32_t(~crc);
  if (len >= 3 * 4096) {
    const size_t third = len / 3 / 8 * 8;
    const uint8_t* p1 = p + third;
    const uint8_t* p2 = p + 2 * third;
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < third; i += 8) {
      uint64_t v0, v1, v2;
      std::memcpy(&v0, p + i, 8);
      std::memcpy(&v1, p1 + i, 8);
      std::memcpy(&v2, p2 + i, 8);
      c = _mm_crc32_u64(c, v0);
      c1 = _mm_crc32_u64(c1, v1);
      c2 = _mm_crc32_u64(c2, v2);
    }
    const uint32_t shift = x_pow_8n(third);
    c = mul_mod_p(shift, uint32_t(c)) ^ uint32_t(c1);
    c = mul_mod_p(shift, uint32_t(c)) ^ uint32_t(c2);
    p += 3 * third;
    len -= 3 * third;
  }
  return ~uint32_t(raw_chain(c, p, len));
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

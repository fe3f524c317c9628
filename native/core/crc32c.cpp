// CRC-32C: a byte-wise table (portable), the SSE4.2 instruction, and carry-less multiplication folding on
// AVX-512 (VPCLMULQDQ), chosen at run time.
//
// The crc32 instruction has a latency of three cycles but a throughput of one, so large buffers run three
// independent chains over three thirds and join them: the CRC register is linear, so a chain's state moves
// across n zero bytes by a multiplication with x^(8n) mod P (carry-less, in the reflected bit order).
//
// Folding: with zero initial state and no final inversion, the CRC of a message M is M(x)·x^32 mod P, so
// any shorter polynomial congruent to M mod P (at the same end position) has the same CRC. Four 512-bit
// accumulators (16 lanes of 128 bits) each carry their lane's data forward over 2048 bits by two carry-less
// products with x^e mod P, and the next 256 bytes are xored in; at the end the lanes fold into one 128-bit
// value, whose 16 bytes (and any tail) the crc32 instruction finishes. An initial state s is the same as
// xoring s into the message's first four bytes.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the undefined pass-through operand of AVX-512 intrinsics when the file is not compiled with
// -mavx512f: a known false positive (as in native/quant/kernels_avx512.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "covenant/crc32c.h"

#include <immintrin.h>
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

// x^e mod P: square-and-multiply over the bits of e.
uint32_t x_pow(uint64_t e) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 30;   // x^1
  for (; e != 0; e >>= 1) {
    if (e & 1) result = mul_mod_p(result, power);
    power = mul_mod_p(power, power);
  }
  return result;
}

uint32_t x_pow_8n(size_t n) { return x_pow(uint64_t(n) * 8); }

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

// The pair of 64-bit constants that carries a 128-bit lane forward by d bits. A lane read little-endian
// holds x^127 .. x^0 in bits 0 .. 127: its low qword is H·x^64, its high qword L. A carry-less product of two
// reflected 64-bit values reads as their product times x, so H needs x^(d+63) mod P and L needs x^(d-1)
// mod P, each as a reflected 64-bit value (x^k at bit 63-k).
struct FoldConstants {
  uint64_t for_low, for_high;
};
FoldConstants fold_constants(uint64_t d) { return {uint64_t(x_pow(d + 63)) << 32, uint64_t(x_pow(d - 1)) << 32}; }

struct VpclmulConstants {
  FoldConstants by2048, by512, by384, by256, by128;
  VpclmulConstants()
      : by2048(fold_constants(2048)), by512(fold_constants(512)), by384(fold_constants(384)), by256(fold_constants(256)),
        by128(fold_constants(128)) {}
};

#define COVENANT_VPCLMUL __attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2")))

COVENANT_VPCLMUL inline __m512i broadcast_pair(const FoldConstants& k) {
  return _mm512_broadcast_i32x4(_mm_set_epi64x(static_cast<long long>(k.for_high), static_cast<long long>(k.for_low)));
}

// Every lane of x carried forward by the constants' distance, xored with `next`.
COVENANT_VPCLMUL inline __m512i fold512(__m512i x, __m512i k, __m512i next) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next, 0x96);
}

COVENANT_VPCLMUL inline __m128i fold128(__m128i x, const FoldConstants& k, __m128i next) {
  const __m128i kk = _mm_set_epi64x(static_cast<long long>(k.for_high), static_cast<long long>(k.for_low));
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11)), next);
}

constexpr size_t kFoldMin = 512;  // below this the three chains are as fast

COVENANT_VPCLMUL uint32_t extend_vpclmul(uint32_t crc, const uint8_t* p, size_t len) {
  if (len < kFoldMin) return extend_sse42(crc, p, len);
  static const VpclmulConstants k;
  __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128),
          x3 = _mm512_loadu_si512(p + 192);
  x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~crc))));
  p += 256;
  len -= 256;
  const __m512i by2048 = broadcast_pair(k.by2048);
  for (; len >= 256; p += 256, len -= 256) {
    x0 = fold512(x0, by2048, _mm512_loadu_si512(p));
    x1 = fold512(x1, by2048, _mm512_loadu_si512(p + 64));
    x2 = fold512(x2, by2048, _mm512_loadu_si512(p + 128));
    x3 = fold512(x3, by2048, _mm512_loadu_si512(p + 192));
  }
  const __m512i by512 = broadcast_pair(k.by512);
  x1 = fold512(x0, by512, x1);
  x2 = fold512(x1, by512, x2);
  x3 = fold512(x2, by512, x3);
  __m128i acc = _mm512_extracti32x4_epi32(x3, 3);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 0), k.by384, acc);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 1), k.by256, acc);
  acc = fold128(_mm512_extracti32x4_epi32(x3, 2), k.by128, acc);
  for (; len >= 16; p += 16, len -= 16) acc = fold128(acc, k.by128, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(acc)));
  c = _mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(acc, 1)));
  return ~uint32_t(raw_chain(c, p, len));
}

Crc32cImpl best_impl() {
  static const Crc32cImpl best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("sse4.2"))
      return Crc32cImpl::Vpclmul;
    if (__builtin_cpu_supports("sse4.2")) return Crc32cImpl::Sse42;
    return Crc32cImpl::Portable;
  }();
  return best;
}

}  // namespace

bool crc32c_impl_supported(Crc32cImpl impl) {
  switch (impl) {
    case Crc32cImpl::Auto:
    case Crc32cImpl::Portable:
      return true;
    case Crc32cImpl::Sse42:
      return best_impl() != Crc32cImpl::Portable;
    case Crc32cImpl::Vpclmul:
      return best_impl() == Crc32cImpl::Vpclmul;
  }
  return false;
}

const char* crc32c_impl_name(Crc32cImpl impl) {
  switch (impl) {
    case Crc32cImpl::Auto: return crc32c_impl_name(best_impl());
    case Crc32cImpl::Portable: return "portable";
    case Crc32cImpl::Sse42: return "sse4.2";
    case Crc32cImpl::Vpclmul: return "vpclmulqdq";
  }
  return "unknown";
}

uint32_t crc32c_extend_with(Crc32cImpl impl, uint32_t crc, const void* data, size_t len) {
  if (impl == Crc32cImpl::Auto) impl = best_impl();
  if (!crc32c_impl_supported(impl)) impl = Crc32cImpl::Portable;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  switch (impl) {
    case Crc32cImpl::Vpclmul: return extend_vpclmul(crc, p, len);
    case Crc32cImpl::Sse42: return extend_sse42(crc, p, len);
    default: return extend_portable(crc, p, len);
  }
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len) { return crc32c_extend_with(Crc32cImpl::Auto, crc, data, len); }

}  // namespace covenant

// AVX-512F block kernels (16 lanes): the AVX2 scheme at twice the width, with vpmovsdb storing 16 codes at
// once. Block tails shorter than 16 use the shared scalar helpers, so results equal the scalar kernels bit
// for bit. Only AVX-512F instructions are used.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the deliberately undefined pass-through operand of AVX-512 intrinsics (_mm512_undefined_*)
// when the file is not compiled with -mavx512f: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"

#define COVENANT_AVX512 __attribute__((target("avx512f")))

namespace covenant {
namespace quant_detail {

namespace {

COVENANT_AVX512 inline uint32_t absmax_bits(const float* x, size_t len) {
  const __m512i mask = _mm512_set1_epi32(static_cast<int>(kAbsMask));
  __m512i m0 = _mm512_setzero_si512(), m1 = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
    m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), mask));
  }
  for (; i + 16 <= len; i += 16) m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
  uint32_t m = _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));
  for (; i < len; ++i) m = std::max(m, abs_bits(x[i]));
  return m;
}

COVENANT_AVX512 inline uint32_t absmax_sum_bits(const float* x, const float* r, size_t len) {
  const __m512i mask = _mm512_set1_epi32(static_cast<int>(kAbsMask));
  __m512i m = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= len; i += 16) {
    __m512 v = _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(r + i));
    m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_castps_si512(v), mask));
  }
  uint32_t mm = _mm512_reduce_max_epu32(m);
  for (; i < len; ++i) mm = std::max(mm, abs_bits(x[i] + r[i]));
  return mm;
}

// Float codes of v: clamp(round_half_even(v / s), -127, 127).
COVENANT_AVX512 inline __m512 codes_f(__m512 v, __m512 s) {
  __m512 y = _mm512_roundscale_ps(_mm512_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
}

COVENANT_AVX512 inline void store16(int8_t* q, __m512 c) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(c)));
}

COVENANT_AVX512 inline __m512 load16_codes(const int8_t* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}

COVENANT_AVX512 size_t quantize(int8_t* q, float* scales, const float* x, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float* xb = x + b0;
    int8_t* qb = q + b0;
    const uint32_t m = absmax_bits(xb, len);
    if (m >= kInfBits) return b0 + first_nonfinite(xb, len);
    const float s = quant_scale(float_of_bits(m));
    scales[bi] = s;
    if (s == 0.0f) {
      std::memset(qb, 0, len);
      continue;
    }
    const __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
      store16(qb + i, codes_f(_mm512_loadu_ps(xb + i), vs));
      store16(qb + i + 16, codes_f(_mm512_loadu_ps(xb + i + 16), vs));
    }
    for (; i + 16 <= len; i += 16) store16(qb + i, codes_f(_mm512_loadu_ps(xb + i), vs));
    quantize_tail(qb + i, xb + i, len - i, s);
  }
  return kNone;
}

COVENANT_AVX512 void dequantize(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    const __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 16 <= len; i += 16) _mm512_storeu_ps(out + b0 + i, _mm512_mul_ps(load16_codes(q + b0 + i), vs));
    dequantize_tail(out + b0 + i, q + b0 + i, len - i, s);
  }
}

// dequantize with non-temporal stores: a large result then does not read every output line into the cache
// first, nor evict what the caller works on. Streaming needs 64-byte aligned stores, and out need not be
// aligned to a block, so each aligned group of 16 takes its lanes' scales from at most two blocks (block >=
// 16). Same products as dequantize, so the same bits.
COVENANT_AVX512 void dequantize_stream(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  if (block < 16 || n < 64) {
    dequantize(out, q, scales, n, block);
    return;
  }
  size_t i = 0;
  while (i < n && (reinterpret_cast<uintptr_t>(out + i) & 63) != 0) {
    out[i] = static_cast<float>(q[i]) * scales[i / block];
    ++i;
  }
  size_t bi = i / block, next = (bi + 1) * block;  // block of element i, and where the next one starts
  for (; i + 16 <= n; i += 16) {
    __m512 vs = _mm512_set1_ps(scales[bi]);
    if (next < i + 16) {
      const __mmask16 later = static_cast<__mmask16>(0xFFFFu << (next - i));
      vs = _mm512_mask_blend_ps(later, vs, _mm512_set1_ps(scales[bi + 1]));
    }
    _mm512_stream_ps(out + i, _mm512_mul_ps(load16_codes(q + i), vs));
    if (next <= i + 16) {
      ++bi;
      next += block;
    }
  }
  _mm_sfence();
  for (; i < n; ++i) out[i] = static_cast<float>(q[i]) * scales[i / block];
}

COVENANT_AVX512 void dequantize_accumulate(float* acc, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    const __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
      __m512 p = _mm512_mul_ps(load16_codes(q + b0 + i), vs);
      COVENANT_NO_FUSE(p);
      _mm512_storeu_ps(acc + b0 + i, _mm512_add_ps(_mm512_loadu_ps(acc + b0 + i), p));
    }
    accumulate_tail(acc + b0 + i, q + b0 + i, len - i, s);
  }
}

COVENANT_AVX512 size_t ef_scales(float* scales, const float* x, const float* r, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const uint32_t m = absmax_sum_bits(x + b0, r + b0, len);
    if (m >= kInfBits) return b0 + first_nonfinite_sum(x + b0, r + b0, len);
    scales[bi] = quant_scale(float_of_bits(m));
  }
  return kNone;
}

COVENANT_AVX512 void ef_apply(int8_t* q, float* r, const float* x, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    int8_t* qb = q + b0;
    float* rb = r + b0;
    const float* xb = x + b0;
    size_t i = 0;
    if (s != 0.0f) {
      const __m512 vs = _mm512_set1_ps(s);
      for (; i + 16 <= len; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(xb + i), _mm512_loadu_ps(rb + i));
        __m512 c = codes_f(v, vs);
        __m512 p = _mm512_mul_ps(c, vs);
        COVENANT_NO_FUSE(p);
        _mm512_storeu_ps(rb + i, _mm512_sub_ps(v, p));
        store16(qb + i, c);
      }
    }
    ef_apply_tail(qb + i, rb + i, xb + i, len - i, s);
  }
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k{"avx512", quantize, dequantize, dequantize_stream, dequantize_accumulate, ef_scales, ef_apply};
  return k;
}

}  // namespace quant_detail
}  // namespace covenant

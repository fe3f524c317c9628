// AVX2 block kernels (8 lanes): absmax as an integer max over |x|'s bits (which also flags NaN/Inf), IEEE
// division, explicit round-to-nearest-even, saturating packs to int8. Block tails shorter than 8 use the
// shared scalar helpers, so results equal the scalar kernels bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"

#define COVENANT_AVX2 __attribute__((target("avx2")))

namespace covenant {
namespace quant_detail {

namespace {

COVENANT_AVX2 inline uint32_t hmax_epu32(__m256i m) {
  __m128i v = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  v = _mm_max_epu32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm_max_epu32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(v));
}

// max over |x[i]|'s bits, i in [0, len).
COVENANT_AVX2 inline uint32_t absmax_bits(const float* x, size_t len) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(kAbsMask));
  __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= len; i += 16) {
    m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), mask));
    m1 = _mm256_max_epu32(m1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8)), mask));
  }
  for (; i + 8 <= len; i += 8)
    m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), mask));
  uint32_t m = hmax_epu32(_mm256_max_epu32(m0, m1));
  for (; i < len; ++i) m = std::max(m, abs_bits(x[i]));
  return m;
}

// max over |fl(x[i] + r[i])|'s bits.
COVENANT_AVX2 inline uint32_t absmax_sum_bits(const float* x, const float* r, size_t len) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(kAbsMask));
  __m256i m = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(r + i));
    m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(v), mask));
  }
  uint32_t mm = hmax_epu32(m);
  for (; i < len; ++i) mm = std::max(mm, abs_bits(x[i] + r[i]));
  return mm;
}

// int32 codes of v (8 lanes): clamp(round_half_even(v / s), -127, 127).
COVENANT_AVX2 inline __m256 codes_f(__m256 v, __m256 s) {
  __m256 y = _mm256_round_ps(_mm256_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
}

// 8 int32 codes -> 8 int8 at q.
COVENANT_AVX2 inline void store8(int8_t* q, __m256i c) {
  __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packs_epi16(w, w));
}

// 32 int32 codes (4 vectors in order) -> 32 int8 at q.
COVENANT_AVX2 inline void store32(int8_t* q, __m256i c0, __m256i c1, __m256i c2, __m256i c3) {
  // packs work per 128-bit lane: the bytes come out as 4-byte groups c0lo c1lo c2lo c3lo | c0hi c1hi c2hi c3hi.
  __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3));
  p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), p);
}

COVENANT_AVX2 size_t quantize(int8_t* q, float* scales, const float* x, size_t n, size_t block) {
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
    const __m256 vs = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
      store32(qb + i, _mm256_cvtps_epi32(codes_f(_mm256_loadu_ps(xb + i), vs)),
              _mm256_cvtps_epi32(codes_f(_mm256_loadu_ps(xb + i + 8), vs)),
              _mm256_cvtps_epi32(codes_f(_mm256_loadu_ps(xb + i + 16), vs)),
              _mm256_cvtps_epi32(codes_f(_mm256_loadu_ps(xb + i + 24), vs)));
    }
    for (; i + 8 <= len; i += 8) store8(qb + i, _mm256_cvtps_epi32(codes_f(_mm256_loadu_ps(xb + i), vs)));
    quantize_tail(qb + i, xb + i, len - i, s);
  }
  return kNone;
}

COVENANT_AVX2 inline __m256 load8_codes(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

COVENANT_AVX2 void dequantize(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    const __m256 vs = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) _mm256_storeu_ps(out + b0 + i, _mm256_mul_ps(load8_codes(q + b0 + i), vs));
    dequantize_tail(out + b0 + i, q + b0 + i, len - i, s);
  }
}

COVENANT_AVX2 void dequantize_accumulate(float* acc, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    const __m256 vs = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
      __m256 p = _mm256_mul_ps(load8_codes(q + b0 + i), vs);
      COVENANT_NO_FUSE(p);
      _mm256_storeu_ps(acc + b0 + i, _mm256_add_ps(_mm256_loadu_ps(acc + b0 + i), p));
    }
    accumulate_tail(acc + b0 + i, q + b0 + i, len - i, s);
  }
}

COVENANT_AVX2 size_t ef_scales(float* scales, const float* x, const float* r, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const uint32_t m = absmax_sum_bits(x + b0, r + b0, len);
    if (m >= kInfBits) return b0 + first_nonfinite_sum(x + b0, r + b0, len);
    scales[bi] = quant_scale(float_of_bits(m));
  }
  return kNone;
}

COVENANT_AVX2 void ef_apply(int8_t* q, float* r, const float* x, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float s = scales[bi];
    int8_t* qb = q + b0;
    float* rb = r + b0;
    const float* xb = x + b0;
    size_t i = 0;
    if (s != 0.0f) {
      const __m256 vs = _mm256_set1_ps(s);
      for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(xb + i), _mm256_loadu_ps(rb + i));
        __m256 c = codes_f(v, vs);
        __m256 p = _mm256_mul_ps(c, vs);
        COVENANT_NO_FUSE(p);
        _mm256_storeu_ps(rb + i, _mm256_sub_ps(v, p));
        store8(qb + i, _mm256_cvtps_epi32(c));
      }
    }
    ef_apply_tail(qb + i, rb + i, xb + i, len - i, s);
  }
}

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels k{"avx2", quantize, dequantize, dequantize, dequantize_accumulate, ef_scales, ef_apply};
  return k;
}

}  // namespace quant_detail
}  // namespace covenant

// Internal to native/quant: one table of block kernels per ISA, and the scalar arithmetic every table shares
// (the vector kernels finish each block's tail with these same helpers, so all of them agree bit for bit).
// A kernel call covers elements [0, n) of its pointers with blocks starting at element 0; quantize.cpp and
// error_feedback.cpp split tensors at block boundaries and spread the pieces over the thread pool.
// The conventions (scale rule, rounding, error bound) are in include/covenant/quant.h.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "covenant/quant.h"

namespace covenant {
namespace quant_detail {

// "No bad element" from the kernels that scan for non-finite values.
constexpr size_t kNone = SIZE_MAX;

struct Kernels {
  const char* name;
  // q (n), scales (nb) from x (n). Returns the index of x's first non-finite element, or kNone. Stops at
  // the first block that holds one (later blocks are not written).
  size_t (*quantize)(int8_t* q, float* scales, const float* x, size_t n, size_t block);
  // out (n) = q * scale (OVERWRITES). Scales were checked by the caller.
  void (*dequantize)(float* out, const int8_t* q, const float* scales, size_t n, size_t block);
  // dequantize's result, stored past the cache where the ISA can (for outputs not read again soon).
  void (*dequantize_stream)(float* out, const int8_t* q, const float* scales, size_t n, size_t block);
  // acc (n) += fl(q * scale) (ACCUMULATES).
  void (*dequantize_accumulate)(float* acc, const int8_t* q, const float* scales, size_t n, size_t block);
  // Error feedback, pass 1: scales (nb) of v = fl(x + r). Returns the first index where v is not finite, or
  // kNone. Writes nothing but scales.
  size_t (*ef_scales)(float* scales, const float* x, const float* r, size_t n, size_t block);
  // Pass 2: q (n) = codes of v = fl(x + r) with pass 1's scales; r (n) = fl(v - fl(q * scale)).
  void (*ef_apply)(int8_t* q, float* r, const float* x, const float* scales, size_t n, size_t block);
};

const Kernels& scalar_kernels();
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();
// The table for isa (Auto: the best this CPU has); throws std::invalid_argument if the CPU lacks it.
const Kernels& kernels_for(QuantIsa isa);

// Shared by the drivers: v as text ("%g", or NaN / Infinity / -Infinity as JavaScript writes them); the scale check of dequantize (finite, >= 0; throws
// std::invalid_argument naming scales[b]); the NonFiniteError of quantize naming name[i].
std::string float_text(float v);
void check_scales(const float* scales, size_t nb, const char* who);
[[noreturn]] void throw_nonfinite(const char* who, const char* name, size_t i, float v);

// Makes a register value opaque to the optimizer, so a product rounded before cannot be fused with the
// add or subtract after it into an FMA (rounded once): dequantize_accumulate must round like dequantize.
// Used as a statement on a float, __m256 or __m512 lvalue.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define COVENANT_NO_FUSE(v) asm("" : "+v"(v))
#else
#define COVENANT_NO_FUSE(v) ((void)0)
#endif

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;  // |x| bits at or above this: Inf or NaN

inline uint32_t abs_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b & kAbsMask;
}

inline float float_of_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Round to nearest, ties to even, without reading the rounding mode. |y| < 2^22, so y - floor(y) is exact.
inline float round_half_even(float y) {
  float f = std::floor(y);
  float d = y - f;
  if (d > 0.5f || (d == 0.5f && (static_cast<int32_t>(f) & 1))) f += 1.0f;
  return f;
}

// The code of x in a block of scale s (s >= FLT_MIN, |x| <= 127 * s up to rounding).
inline int8_t code_of(float x, float s) {
  float y = round_half_even(x / s);
  y = y < -127.0f ? -127.0f : (y > 127.0f ? 127.0f : y);
  return static_cast<int8_t>(y);
}

// Index of the first non-finite element of x (n), or kNone.
inline size_t first_nonfinite(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (abs_bits(x[i]) >= kInfBits) return i;
  return kNone;
}

// Index of the first i where fl(x[i] + r[i]) is not finite, or kNone.
inline size_t first_nonfinite_sum(const float* x, const float* r, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (abs_bits(x[i] + r[i]) >= kInfBits) return i;
  return kNone;
}

// Scalar parts of one block, shared by every table for tails.
inline void quantize_tail(int8_t* q, const float* x, size_t len, float s) {
  for (size_t i = 0; i < len; ++i) q[i] = code_of(x[i], s);
}
inline void dequantize_tail(float* out, const int8_t* q, size_t len, float s) {
  for (size_t i = 0; i < len; ++i) out[i] = static_cast<float>(q[i]) * s;
}
inline void accumulate_tail(float* acc, const int8_t* q, size_t len, float s) {
  for (size_t i = 0; i < len; ++i) {
    float p = static_cast<float>(q[i]) * s;
    COVENANT_NO_FUSE(p);
    acc[i] = acc[i] + p;
  }
}
inline void ef_apply_tail(int8_t* q, float* r, const float* x, size_t len, float s) {
  for (size_t i = 0; i < len; ++i) {
    float v = x[i] + r[i];
    if (s == 0.0f) {
      q[i] = 0;
      r[i] = v;
      continue;
    }
    int8_t c = code_of(v, s);
    float p = static_cast<float>(c) * s;
    COVENANT_NO_FUSE(p);
    q[i] = c;
    r[i] = v - p;
  }
}

}  // namespace quant_detail
}  // namespace covenant

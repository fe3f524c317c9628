// Scalar block kernels: the reference arithmetic of int8 quantization (quant.h), one element at a time. The
// *_ref functions and CPUs without AVX2 run these; the vector kernels are tested against them bit for bit.
#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace covenant {
namespace quant_detail {

namespace {

size_t quantize(int8_t* q, float* scales, const float* x, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    const float* xb = x + b0;
    uint32_t m = 0;
    for (size_t i = 0; i < len; ++i) m = std::max(m, abs_bits(xb[i]));
    if (m >= kInfBits) return b0 + first_nonfinite(xb, len);
    const float s = quant_scale(float_of_bits(m));
    scales[bi] = s;
    if (s == 0.0f) std::memset(q + b0, 0, len);
    else quantize_tail(q + b0, xb, len, s);
  }
  return kNone;
}

void dequantize(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) dequantize_tail(out + b0, q + b0, std::min(block, n - b0), scales[bi]);
}

void dequantize_accumulate(float* acc, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) accumulate_tail(acc + b0, q + b0, std::min(block, n - b0), scales[bi]);
}

size_t ef_scales(float* scales, const float* x, const float* r, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
    const size_t len = std::min(block, n - b0);
    uint32_t m = 0;
    for (size_t i = 0; i < len; ++i) m = std::max(m, abs_bits(x[b0 + i] + r[b0 + i]));
    if (m >= kInfBits) return b0 + first_nonfinite_sum(x + b0, r + b0, len);
    scales[bi] = quant_scale(float_of_bits(m));
  }
  return kNone;
}

void ef_apply(int8_t* q, float* r, const float* x, const float* scales, size_t n, size_t block) {
  for (size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi)
    ef_apply_tail(q + b0, r + b0, x + b0, std::min(block, n - b0), scales[bi]);
}

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{"scalar", quantize, dequantize, dequantize, dequantize_accumulate, ef_scales, ef_apply};
  return k;
}

}  // namespace quant_detail
}  // namespace covenant

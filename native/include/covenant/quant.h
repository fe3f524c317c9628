// Blockwise absmax int8 quantization (one fp32 scale per block of `block` elements) and the error-feedback
// compressor built on it. This is what a worker sends instead of fp32 pseudo-gradients: about 1 byte per
// element plus 4 bytes per block.
//
// Conventions (every implementation, scalar or vector, follows them bit for bit):
//   - Blocks are counted from element 0 of the call: block b covers [b*block, min(n, (b+1)*block)); the last
//     block may be partial. nb = ceil(n / block) scales. Quantizing a sub-range (x + off, len) gives the same
//     codes and scales as the whole tensor's blocks only when off is a multiple of block.
//   - absmax = max |x| over the block (exact; the order of a max does not matter).
//   - scale  = quant_scale(absmax) = absmax / 127 rounded to fp32, with two edge rules:
//       * scale 0 when absmax / 127 is below FLT_MIN (an all-zero block, or one so small that its scale
//         would be subnormal): every code of the block is 0 and it dequantizes to 0;
//       * when 127 * scale would overflow to inf (absmax within 2^-24 of FLT_MAX) the scale is stepped one
//         ulp towards 0, so dequantization never makes an inf out of finite input.
//   - code   = clamp(round_half_even(fl(x / scale)), -127, 127): an IEEE division, then round to nearest,
//     ties to even (explicit; independent of the MXCSR rounding mode), so codes are in [-127, 127] and -128
//     is never produced (dequantize accepts it).
//   - dequant = fl(code * scale): one IEEE multiply. dequantize_accumulate computes acc + fl(code * scale)
//     with the product rounded first (never fused into an FMA), so it is bit-identical to dequantize then
//     add.
//   - Error bound, per element of a block with scale > 0: |x - dequant(quant(x))| <= scale * (1/2 + 2^-16)
//     (scale/2 from rounding to the nearest code; the 2^-16 covers the two fp32 roundings, of x/scale and of
//     code*scale, each at most 127 * 2^-24 of the scale). For a flushed block (scale 0) the error is
//     |x| <= absmax < 127 * FLT_MIN (about 1.5e-36).
//   - Every block depends on its own elements only, and threads split the work at block boundaries, so the
//     results are bit-identical for any thread count and for every ISA (AVX-512, AVX2, scalar). The
//     default floating-point environment is assumed (round to nearest, no flush-to-zero).
//   - Non-finite input (NaN, +-Inf) is refused: quantize throws NonFiniteError naming the first bad index.
//     On that error q and scales hold unspecified partial output; never use them.
//
// Serialized "int8 slice" (for the wire; framing is the caller's): the n codes (int8), then the nb scales
// (fp32, little-endian like the host, IEEE 754 binary32), packed, no padding:
//   [ codes: n bytes ][ scales: 4 * ceil(n / block) bytes ]
// The scales start at byte n, which need not be 4-aligned: read them with memcpy. int8_slice_layout()
// gives the offsets; quantized_bytes(n, block) is the total.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

namespace covenant {

class ThreadPool;

// The layout above assumes 1-byte codes and IEEE binary32 scales.
static_assert(sizeof(int8_t) == 1 && sizeof(float) == 4, "int8 slice layout: 1-byte codes, 4-byte scales");
static_assert(std::numeric_limits<float>::is_iec559, "int8 slice layout: scales are IEEE 754 binary32");

constexpr int kQuantMaxCode = 127;

// Which kernels run. Auto picks the best one this CPU supports (quant_best_isa()); the others are for tests
// and the bench. Asking for one the CPU lacks throws std::invalid_argument.
enum class QuantIsa { Auto, Scalar, Avx2, Avx512 };
QuantIsa quant_best_isa();
bool quant_isa_supported(QuantIsa isa);
const char* quant_isa_name(QuantIsa isa);  // "auto", "scalar", "avx2", "avx512"

// Number of blocks (= scales) of n elements: ceil(n / block). Throws std::invalid_argument if block < 1.
size_t quant_num_blocks(size_t n, int block);
// Bytes of a serialized int8 slice: n + 4 * quant_num_blocks(n, block).
size_t quantized_bytes(size_t n, int block);

struct Int8SliceLayout {
  size_t codes_offset;   // always 0
  size_t codes_bytes;    // n
  size_t scales_offset;  // n (may be unaligned)
  size_t scales_bytes;   // 4 * nb
  size_t total_bytes;    // n + 4 * nb
};
constexpr Int8SliceLayout int8_slice_layout_unchecked(size_t n, size_t block) {
  return Int8SliceLayout{0, n, n, sizeof(float) * (n / block + (n % block != 0)),
                         n + sizeof(float) * (n / block + (n % block != 0))};
}
// Throws std::invalid_argument if block < 1.
Int8SliceLayout int8_slice_layout(size_t n, int block);
static_assert(int8_slice_layout_unchecked(100, 64).scales_offset == 100 &&
                  int8_slice_layout_unchecked(100, 64).total_bytes == 100 + 2 * 4 &&
                  int8_slice_layout_unchecked(0, 64).total_bytes == 0 &&
                  int8_slice_layout_unchecked(128, 64).scales_bytes == 8,
              "int8 slice layout: codes, then one fp32 scale per (possibly partial) block");

// The scale rule above: absmax (finite, >= 0) -> scale.
inline float quant_scale(float absmax) {
  float s = absmax / 127.0f;
  if (!(s >= FLT_MIN)) return 0.0f;
  if (s * 127.0f > FLT_MAX) s = std::nextafter(s, 0.0f);
  return s;
}

// A non-finite element was found: index() is the first one (lowest index) of the call.
// For ErrorFeedbackCompressor::compress, sum_overflow() tells that input[index] is finite but
// input[index] + residual[index] overflowed fp32; value() is then that (infinite) sum, else the input.
class NonFiniteError : public std::invalid_argument {
 public:
  NonFiniteError(const std::string& what, size_t index, float value, bool sum_overflow = false)
      : std::invalid_argument(what), index_(index), value_(value), sum_overflow_(sum_overflow) {}
  size_t index() const { return index_; }
  float value() const { return value_; }
  bool sum_overflow() const { return sum_overflow_; }

 private:
  size_t index_;
  float value_;
  bool sum_overflow_;
};

// q (n), scales (nb) from x (n). Throws NonFiniteError (first bad index) on NaN/Inf, std::invalid_argument
// if block < 1. pool may be null (runs on the calling thread).
void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, int block, ThreadPool* pool,
                   QuantIsa isa = QuantIsa::Auto);
// out (n) = q * scale of its block. OVERWRITES out.
// Throws std::invalid_argument, before writing anything, when a scale is negative or not finite.
void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, int block, ThreadPool* pool,
                     QuantIsa isa = QuantIsa::Auto);
// dequantize_int8's result, bit for bit, with stores that bypass the cache where the ISA allows (AVX-512):
// for large outputs that are not read again soon.
void dequantize_int8_streaming(float* out, const int8_t* q, const float* scales, size_t n, int block, ThreadPool* pool,
                               QuantIsa isa = QuantIsa::Auto);
// acc (n) += q * scale of its block (ACCUMULATES; product rounded before the add). Same scale checks, acc
// untouched on error.
void dequantize_accumulate_int8(float* acc, const int8_t* q, const float* scales, size_t n, int block,
                                ThreadPool* pool, QuantIsa isa = QuantIsa::Auto);

// Scalar, single-thread references: the oracles the vector kernels are tested against.
void quantize_int8_ref(int8_t* q, float* scales, const float* x, size_t n, int block);
void dequantize_int8_ref(float* out, const int8_t* q, const float* scales, size_t n, int block);
void dequantize_accumulate_int8_ref(float* acc, const int8_t* q, const float* scales, size_t n, int block);

// The error-feedback step on caller-owned memory (what ErrorFeedbackCompressor::compress runs on its own
// residual; cuda::error_feedback_step is its device twin): v = fl(input + residual); q (n), scales
// (nb = ceil(n / block)) = quantize(v); residual (n) = fl(v - fl(q * scale)) (UPDATED in place). Refuses a
// non-finite input, or a sum that overflows, with NonFiniteError (first bad index; sum_overflow() tells which)
// and leaves the residual unchanged. Throws std::invalid_argument if block < 1.
void error_feedback_step(int8_t* q, float* scales, float* residual, const float* input, size_t n, int block,
                         ThreadPool* pool, QuantIsa isa = QuantIsa::Auto);

// Throws NonFiniteError "who: name[i] = v is not finite" for the first non-finite element of x (n).
void check_finite(const float* x, size_t n, const char* who, const char* name);

// Error feedback (the residual of DiLoCo-style compressed pseudo-gradients): each compress quantizes
// v = input + residual and keeps residual = v - dequant(quant(v)), what quantization dropped, for the next
// call. Summed over R calls on inputs x_1..x_R, the dequantized outputs equal sum(x_r) - residual_R exactly up
// to fp32 rounding of the two subtractions, and |residual_R| <= scale_R * (1/2 + 2^-16) per element.
class ErrorFeedbackCompressor {
 public:
  // n elements, blocks of `block`; the residual starts at zero. Throws std::invalid_argument if block < 1.
  ErrorFeedbackCompressor(size_t n, int block);

  size_t size() const { return n_; }
  int block() const { return block_; }
  size_t num_blocks() const { return nb_; }

  // q (n), scales (nb) = quantize(v), v = fl(input + residual); then residual = fl(v - fl(q * scale)).
  // q and scales are bit-identical to quantize_int8(v) and the residual to v - dequantize_int8(q).
  // Refuses non-finite input, or a sum that overflows, with NonFiniteError (first bad index) and leaves the
  // residual unchanged (q and scales are then unspecified). Two passes: scales (which checks everything),
  // then codes and residual.
  void compress(int8_t* q, float* scales, const float* input, ThreadPool* pool, QuantIsa isa = QuantIsa::Auto);

  // The residual (n floats, 64-byte aligned); the shared pointer keeps it alive beyond this object.
  const float* residual() const { return residual_.get(); }
  std::shared_ptr<float> residual_shared() const { return residual_; }
  // Copies r (n floats) in. Throws NonFiniteError for a non-finite element, residual unchanged.
  void load_residual(const float* r);
  // Residual back to zero.
  void reset();

 private:
  size_t n_;
  int block_;
  size_t nb_;
  std::shared_ptr<float> residual_;
};

}  // namespace covenant

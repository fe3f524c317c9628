// int8 quantize / dequantize / dequantize-accumulate: argument checks, the ISA choice (once per process, from
// what the CPU supports), and the split of a tensor over the thread pool at block boundaries. The
// arithmetic is in the kernels_*.cpp tables; the conventions are in include/covenant/quant.h.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "covenant/quant.h"
#include "covenant/thread_pool.h"
#include "kernels.h"
#include "split.h"

namespace covenant {

using quant_detail::kNone;
using quant_detail::Kernels;

QuantIsa quant_best_isa() {
  static const QuantIsa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return QuantIsa::Avx512;
    if (__builtin_cpu_supports("avx2")) return QuantIsa::Avx2;
    return QuantIsa::Scalar;
  }();
  return best;
}

bool quant_isa_supported(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::Auto:
    case QuantIsa::Scalar:
      return true;
    case QuantIsa::Avx2:
      quant_best_isa();  // runs __builtin_cpu_init once
      return __builtin_cpu_supports("avx2");
    case QuantIsa::Avx512:
      return quant_best_isa() == QuantIsa::Avx512;
  }
  return false;
}

const char* quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::Auto: return "auto";
    case QuantIsa::Scalar: return "scalar";
    case QuantIsa::Avx2: return "avx2";
    case QuantIsa::Avx512: return "avx512";
  }
  return "unknown";
}

size_t quant_num_blocks(size_t n, int block) {
  if (block < 1) throw std::invalid_argument("int8 quantization: block must be >= 1 but is " + std::to_string(block));
  const size_t b = static_cast<size_t>(block);
  return n / b + (n % b != 0);
}

size_t quantized_bytes(size_t n, int block) { return n + sizeof(float) * quant_num_blocks(n, block); }

Int8SliceLayout int8_slice_layout(size_t n, int block) {
  quant_num_blocks(n, block);  // checks block
  return int8_slice_layout_unchecked(n, static_cast<size_t>(block));
}

namespace quant_detail {

const Kernels& kernels_for(QuantIsa isa) {
  if (isa == QuantIsa::Auto) isa = quant_best_isa();
  if (!quant_isa_supported(isa))
    throw std::invalid_argument(std::string("int8 quantization: this CPU does not support the ") + quant_isa_name(isa) +
                                " kernels (best available: " + quant_isa_name(quant_best_isa()) + ")");
  switch (isa) {
    case QuantIsa::Avx512: return avx512_kernels();
    case QuantIsa::Avx2: return avx2_kernels();
    default: return scalar_kernels();
  }
}

std::string float_text(float v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return buf;
}

void check_scales(const float* scales, size_t nb, const char* who) {
  for (size_t b = 0; b < nb; ++b) {
    const float s = scales[b];
    if (!(s >= 0.0f && s <= FLT_MAX))
      throw std::invalid_argument(std::string(who) + ": scales[" + std::to_string(b) + "] = " + float_text(s) +
                                  " is not a valid scale (expected a finite number >= 0)");
  }
}

[[noreturn]] void throw_nonfinite(const char* who, const char* name, size_t i, float v) {
  throw NonFiniteError(std::string(who) + ": " + name + "[" + std::to_string(i) + "] = " + float_text(v) +
                           " is not finite; NaN and Inf cannot be quantized",
                       i, v);
}

}  // namespace quant_detail

using quant_detail::check_scales;
using quant_detail::for_block_chunks;
using quant_detail::kernels_for;
using quant_detail::throw_nonfinite;

void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, int block, ThreadPool* pool, QuantIsa isa) {
  const size_t nb = quant_num_blocks(n, block);
  const Kernels& k = kernels_for(isa);
  if (nb == 0) return;
  const size_t B = static_cast<size_t>(block);
  std::vector<size_t> bad(pool ? pool->size() : 1, kNone);
  for_block_chunks(n, B, pool, [&](size_t e0, size_t e1, int chunk) {
    const size_t r = k.quantize(q + e0, scales + e0 / B, x + e0, e1 - e0, B);
    if (r != kNone) bad[chunk] = e0 + r;
  });
  const size_t first = *std::min_element(bad.begin(), bad.end());
  if (first != kNone) throw_nonfinite("quantize_int8", "x", first, x[first]);
}

namespace {

// The drivers of the three dequantize kernels: check every scale before writing anything, then run the
// table's kernel over block-aligned pieces.
using DequantKernel = void (*Kernels::*)(float*, const int8_t*, const float*, size_t, size_t);
void run_dequantize(DequantKernel kernel, const char* who, float* out, const int8_t* q, const float* scales, size_t n,
                    int block, ThreadPool* pool, QuantIsa isa) {
  const size_t nb = quant_num_blocks(n, block);
  const Kernels& k = kernels_for(isa);
  check_scales(scales, nb, who);
  const size_t B = static_cast<size_t>(block);
  for_block_chunks(n, B, pool, [&](size_t e0, size_t e1, int) { (k.*kernel)(out + e0, q + e0, scales + e0 / B, e1 - e0, B); });
}

}  // namespace

void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, int block, ThreadPool* pool,
                     QuantIsa isa) {
  run_dequantize(&Kernels::dequantize, "dequantize_int8", out, q, scales, n, block, pool, isa);
}

void dequantize_int8_streaming(float* out, const int8_t* q, const float* scales, size_t n, int block, ThreadPool* pool,
                               QuantIsa isa) {
  run_dequantize(&Kernels::dequantize_stream, "dequantize_int8_streaming", out, q, scales, n, block, pool, isa);
}

void dequantize_accumulate_int8(float* acc, const int8_t* q, const float* scales, size_t n, int block,
                                ThreadPool* pool, QuantIsa isa) {
  run_dequantize(&Kernels::dequantize_accumulate, "dequantize_accumulate_int8", acc, q, scales, n, block, pool, isa);
}

void quantize_int8_ref(int8_t* q, float* scales, const float* x, size_t n, int block) {
  quant_num_blocks(n, block);
  const size_t r = quant_detail::scalar_kernels().quantize(q, scales, x, n, static_cast<size_t>(block));
  if (r != kNone) throw_nonfinite("quantize_int8_ref", "x", r, x[r]);
}

void dequantize_int8_ref(float* out, const int8_t* q, const float* scales, size_t n, int block) {
  check_scales(scales, quant_num_blocks(n, block), "dequantize_int8_ref");
  quant_detail::scalar_kernels().dequantize(out, q, scales, n, static_cast<size_t>(block));
}

void dequantize_accumulate_int8_ref(float* acc, const int8_t* q, const float* scales, size_t n, int block) {
  check_scales(scales, quant_num_blocks(n, block), "dequantize_accumulate_int8_ref");
  quant_detail::scalar_kernels().dequantize_accumulate(acc, q, scales, n, static_cast<size_t>(block));
}

}  // namespace covenant

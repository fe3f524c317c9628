// The error-feedback step and the compressor built on it: quantizes input + residual and keeps what
// quantization dropped for the next call. The step is all-or-nothing for the residual: pass 1 computes every
// block's scale of v = input + residual, which also finds any non-finite v, before pass 2 writes a code or a
// residual.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "covenant/quant.h"
#include "covenant/thread_pool.h"
#include "kernels.h"
#include "split.h"

namespace covenant {

using quant_detail::kNone;

namespace {

// n zeroed floats, 64-byte aligned, freed with the last shared owner.
std::shared_ptr<float> alloc_zeroed(size_t n) {
  if (n > (SIZE_MAX - 63) / sizeof(float)) throw std::bad_alloc();
  const size_t bytes = std::max<size_t>(64, (n * sizeof(float) + 63) / 64 * 64);
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return std::shared_ptr<float>(p, [](float* q) { std::free(q); });
}

}  // namespace

void error_feedback_step(int8_t* q, float* scales, float* residual, const float* input, size_t n, int block,
                         ThreadPool* pool, QuantIsa isa) {
  const quant_detail::Kernels& k = quant_detail::kernels_for(isa);
  quant_num_blocks(n, block);  // checks block
  if (n == 0) return;
  const size_t B = static_cast<size_t>(block);
  float* r = residual;

  // Pass 1: scales of v = input + residual; nothing else is written.
  std::vector<size_t> bad(pool ? pool->size() : 1, kNone);
  quant_detail::for_block_chunks(n, B, pool, [&](size_t e0, size_t e1, int chunk) {
    const size_t i = k.ef_scales(scales + e0 / B, input + e0, r + e0, e1 - e0, B);
    if (i != kNone) bad[chunk] = e0 + i;
  });
  const size_t first = *std::min_element(bad.begin(), bad.end());
  if (first != kNone) {
    const float x = input[first];
    if (quant_detail::abs_bits(x) >= quant_detail::kInfBits)
      quant_detail::throw_nonfinite("error_feedback_step", "input", first, x);
    const float sum = x + r[first];
    throw NonFiniteError("error_feedback_step: input[" + std::to_string(first) + "] + residual[" +
                             std::to_string(first) + "] = " + quant_detail::float_text(x) + " + " +
                             quant_detail::float_text(r[first]) + " overflows fp32",
                         first, sum, true);
  }

  // Pass 2: codes, and the new residual.
  quant_detail::for_block_chunks(n, B, pool, [&](size_t e0, size_t e1, int) {
    k.ef_apply(q + e0, r + e0, input + e0, scales + e0 / B, e1 - e0, B);
  });
}

void check_finite(const float* x, size_t n, const char* who, const char* name) {
  const size_t i = quant_detail::first_nonfinite(x, n);
  if (i != kNone) {
    throw NonFiniteError(std::string(who) + ": " + name + "[" + std::to_string(i) + "] = " +
                             quant_detail::float_text(x[i]) + " is not finite",
                         i, x[i]);
  }
}

ErrorFeedbackCompressor::ErrorFeedbackCompressor(size_t n, int block)
    : n_(n), block_(block), nb_(quant_num_blocks(n, block)), residual_(alloc_zeroed(n)) {}

void ErrorFeedbackCompressor::compress(int8_t* q, float* scales, const float* input, ThreadPool* pool, QuantIsa isa) {
  error_feedback_step(q, scales, residual_.get(), input, n_, block_, pool, isa);
}

void ErrorFeedbackCompressor::load_residual(const float* src) {
  check_finite(src, n_, "ErrorFeedbackCompressor::load_residual", "residual");
  if (n_ > 0 && src != residual_.get()) std::memmove(residual_.get(), src, n_ * sizeof(float));
}

void ErrorFeedbackCompressor::reset() {
  if (n_ > 0) std::memset(residual_.get(), 0, n_ * sizeof(float));
}

}  // namespace covenant

// int8 quantization on a CUDA device: the same blockwise absmax arithmetic as quant.h, bit for bit (scale,
// round-half-to-even codes, products rounded before any add; see the conventions there), on device memory.
// Built only where CMake finds the CUDA toolkit (COVENANT_HAVE_CUDA=1); no CUDA types appear here.
//
// Every pointer below is DEVICE memory (cudaMalloc); `stream` is a cudaStream_t passed as void* (nullptr:
// the legacy default stream). The calls are blocking: each launches its kernels on `stream`, then waits for
// the stream to read back the bad-input flag, so that bad input throws here like on the CPU:
//   - quantize / error_feedback_step: NonFiniteError naming the first (lowest) bad index, as the CPU path;
//   - dequantize / dequantize_accumulate: std::invalid_argument naming the first bad scale, before anything
//     is written;
//   - block < 1: std::invalid_argument; a CUDA failure: std::runtime_error naming the call, file and line.
#pragma once
#include <cstddef>
#include <cstdint>

namespace covenant {
namespace cuda {

// Number of CUDA devices this process can use; 0 (never throws) without a driver or a device.
int device_count();

// q (n), scales (nb = ceil(n / block)) from x (n). Equals quantize_int8_ref bit for bit. On NonFiniteError,
// q and scales hold unspecified partial output.
void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, int block, void* stream);
// out (n) = fl(q * scale of its block). OVERWRITES out.
void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, int block, void* stream);
// acc (n) += fl(q * scale of its block) (ACCUMULATES; the product is rounded before the add).
void dequantize_accumulate_int8(float* acc, const int8_t* q, const float* scales, size_t n, int block,
                                void* stream);
// The fused error-feedback step of ErrorFeedbackCompressor::compress: v = fl(input + residual);
// q (n), scales (nb) = quantize(v); residual (n) = fl(v - fl(q * scale)) (UPDATED in place). Two kernels,
// like the CPU's two passes: scales first (which finds a non-finite input or an overflowing sum), then codes
// and residual, so on NonFiniteError the residual is unchanged.
void error_feedback_step(int8_t* q, float* scales, float* residual, const float* input, size_t n, int block,
                         void* stream);

}  // namespace cuda
}  // namespace covenant

// RoundDeltaCuda (include/covenant/round_delta_cuda.h): the outer loop's Δ and its error-feedback
// compression on the device. The arithmetic is the oracle's (RoundDelta, round_delta.cpp): cuda::difference
// is one IEEE subtraction per element and cuda::error_feedback_step is bit-identical to the host's.
#include "covenant/round_delta_cuda.h"

#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>

#include "../core/cuda_check.h"
#include "covenant/cuda_kernels.h"
#include "covenant/cuda_quant.h"
#include "covenant/quant.h"
#include "covenant/round_delta.h"

namespace covenant {

namespace {

constexpr void* kStream = nullptr;  // the legacy default stream, as GPTCuda's
constexpr size_t kScalesAlign = 256;  // bytes; where the scales start after the codes

size_t scales_offset(size_t n) { return (n + kScalesAlign - 1) / kScalesAlign * kScalesAlign; }

}  // namespace

RoundDeltaCuda::RoundDeltaCuda(size_t n) : n_(n) {
  const size_t bytes = (4 * n > 0 ? 4 * n : 1) * sizeof(float);
  CUDA_CHECK(cudaMalloc(&dmem_, bytes));
  try {
    CUDA_CHECK(cudaMemset(dmem_, 0, bytes));
  } catch (...) {
    cudaFree(dmem_);
    throw;
  }
}

RoundDeltaCuda::~RoundDeltaCuda() {
  free_out();
  cudaFree(dmem_);  // no throw from a destructor; a fault here would already have surfaced
}

void RoundDeltaCuda::free_out() {
  if (out_) cudaFree(out_);
  if (staging_) cudaFreeHost(staging_);
  out_ = nullptr;
  staging_ = nullptr;
  out_bytes_ = 0;
}

void RoundDeltaCuda::ensure_out(size_t bytes) {
  if (bytes <= out_bytes_) return;
  free_out();
  CUDA_CHECK(cudaMalloc(&out_, bytes));
  CUDA_CHECK(cudaMallocHost(&staging_, bytes));
  out_bytes_ = bytes;
}

void RoundDeltaCuda::mark(const float* params) {
  CUDA_CHECK(cudaMemcpy(start(), params, n_ * sizeof(float), cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // a device-to-device copy does not wait by itself
  marked_ = true;
}

void RoundDeltaCuda::compress(int8_t* q, float* scales, const float* params, int block) {
  if (!marked_) throw std::logic_error(round_delta_unmarked_error());
  const size_t nb = quant_num_blocks(n_, block);  // checks block before any work
  if (n_ == 0) return;
  const size_t off = scales_offset(n_), bytes = off + nb * sizeof(float);
  ensure_out(bytes);
  int8_t* dq = reinterpret_cast<int8_t*>(out_);
  float* ds = reinterpret_cast<float*>(out_ + off);
  cuda::difference(delta(), start(), params, n_, kStream);
  CUDA_CHECK(cudaMemcpyAsync(before(), residual(), n_ * sizeof(float), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(kStream)));
  can_undo_ = false;  // a refused compress leaves nothing to undo (the last one's saved residual is gone)
  cuda::error_feedback_step(dq, ds, residual(), delta(), n_, block, kStream);  // waits; residual kept on error
  can_undo_ = true;
  CUDA_CHECK(cudaMemcpy(staging_, out_, bytes, cudaMemcpyDeviceToHost));   // codes and scales in one copy
  std::memcpy(q, staging_, n_);
  std::memcpy(scales, staging_ + off, nb * sizeof(float));
}

bool RoundDeltaCuda::undo_compress() {
  if (!can_undo_) return false;
  CUDA_CHECK(cudaMemcpy(residual(), before(), n_ * sizeof(float), cudaMemcpyDeviceToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());
  can_undo_ = false;
  return true;
}

void RoundDeltaCuda::copy_residual(float* out) {
  CUDA_CHECK(cudaMemcpy(out, residual(), n_ * sizeof(float), cudaMemcpyDeviceToHost));
}

void RoundDeltaCuda::load_residual(const float* r) {
  check_finite(r, n_, "RoundDeltaCuda::load_residual", "residual");
  CUDA_CHECK(cudaMemcpy(residual(), r, n_ * sizeof(float), cudaMemcpyHostToDevice));
  can_undo_ = false;
}

void RoundDeltaCuda::reset_residual() {
  CUDA_CHECK(cudaMemset(residual(), 0, n_ * sizeof(float)));
  CUDA_CHECK(cudaDeviceSynchronize());
  can_undo_ = false;
}

}  // namespace covenant

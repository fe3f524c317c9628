// Causal self-attention in fp32 on a CUDA device, for any head size and compute capability: the GPT engine's
// fallback where the bf16 tensor-core kernels (attention.cu) do not apply. Oracle: attention_flash_forward /
// _backward in native/kernels/cpu/attention_flash.cpp (same lse contract: natural-log log-sum-exp of each
// query row's scaled scores q.k / sqrt(hs) over keys t2 <= t).
//
// Work split: one thread per (b, h, row), rows fastest, so neighbouring threads read neighbouring rows. Each
// thread keeps nothing but scalars: its outputs are accumulated in place in global memory (it owns them).
//   forward    - pass 1 the row max, pass 2 the sum of exp(s - max) -> lse, pass 3 out = sum exp(s - lse) v.
//   dq pass    - D = dout . out (written to delta); dq = scale * sum_j P (dP - D) k_j with P = exp(s - lse),
//                dP = dout . v_j.
//   dk/dv pass - for key j: dv = sum_{i >= j} P_ij dout_i, dk = scale * sum_{i >= j} P_ij (dP_ij - D_i) q_i.
// Two backward kernels, no atomics: deterministic. dqkv is OVERWRITTEN.
#include <cmath>

#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

constexpr unsigned kThreads = 128;

__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// out (B,T,C), lse (B,NH,T) OVERWRITTEN.
__global__ void attention_fp32_forward_kernel(float* __restrict__ out, float* __restrict__ lse,
                                              const float* __restrict__ qkv, int B, int T, int C, int NH,
                                              float scale) {
  const size_t total = (size_t)B * NH * T;
  const int hs = C / NH;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const int t = int(idx % T);
    const size_t bh = idx / T;
    const int h = int(bh % NH), b = int(bh / NH);
    const float* base = qkv + (size_t)b * T * 3 * C;
    const float* q = base + (size_t)t * 3 * C + h * hs;
    float m = -INFINITY;
    for (int t2 = 0; t2 <= t; ++t2) m = fmaxf(m, dot(q, base + (size_t)t2 * 3 * C + C + h * hs, hs) * scale);
    float sum = 0.f;
    for (int t2 = 0; t2 <= t; ++t2) sum += expf(dot(q, base + (size_t)t2 * 3 * C + C + h * hs, hs) * scale - m);
    const float l = m + logf(sum);
    lse[idx] = l;
    float* o = out + ((size_t)b * T + t) * C + h * hs;
    for (int d = 0; d < hs; ++d) o[d] = 0.f;
    for (int t2 = 0; t2 <= t; ++t2) {
      const float* row = base + (size_t)t2 * 3 * C;
      const float p = expf(dot(q, row + C + h * hs, hs) * scale - l);
      const float* v = row + 2 * C + h * hs;
      for (int d = 0; d < hs; ++d) o[d] += p * v[d];
    }
  }
}

// dq part of dqkv OVERWRITTEN; delta (B,NH,T) OVERWRITTEN.
__global__ void attention_fp32_dq_kernel(float* __restrict__ dqkv, float* __restrict__ delta,
                                         const float* __restrict__ dout, const float* __restrict__ qkv,
                                         const float* __restrict__ out, const float* __restrict__ lse, int B, int T,
                                         int C, int NH, float scale) {
  const size_t total = (size_t)B * NH * T;
  const int hs = C / NH;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const int t = int(idx % T);
    const size_t bh = idx / T;
    const int h = int(bh % NH), b = int(bh / NH);
    const float* base = qkv + (size_t)b * T * 3 * C;
    const float* q = base + (size_t)t * 3 * C + h * hs;
    const float* dO = dout + ((size_t)b * T + t) * C + h * hs;
    const float D = dot(dO, out + ((size_t)b * T + t) * C + h * hs, hs);
    delta[idx] = D;
    const float l = lse[idx];
    float* dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
    for (int d = 0; d < hs; ++d) dq[d] = 0.f;
    for (int t2 = 0; t2 <= t; ++t2) {
      const float* k = base + (size_t)t2 * 3 * C + C + h * hs;
      const float* v = k + C;
      const float p = expf(dot(q, k, hs) * scale - l);
      const float ds = p * (dot(dO, v, hs) - D);
      for (int d = 0; d < hs; ++d) dq[d] += ds * k[d];
    }
    for (int d = 0; d < hs; ++d) dq[d] *= scale;
  }
}

// dk and dv parts of dqkv OVERWRITTEN; reads the delta written by the dq pass.
__global__ void attention_fp32_dkdv_kernel(float* __restrict__ dqkv, const float* __restrict__ delta,
                                           const float* __restrict__ dout, const float* __restrict__ qkv,
                                           const float* __restrict__ lse, int B, int T, int C, int NH, float scale) {
  const size_t total = (size_t)B * NH * T;
  const int hs = C / NH;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const int j = int(idx % T);
    const size_t bh = idx / T;
    const int h = int(bh % NH), b = int(bh / NH);
    const float* base = qkv + (size_t)b * T * 3 * C;
    const float* k = base + (size_t)j * 3 * C + C + h * hs;
    const float* v = k + C;
    float* dk = dqkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
    float* dv = dk + C;
    for (int d = 0; d < hs; ++d) {
      dk[d] = 0.f;
      dv[d] = 0.f;
    }
    for (int i = j; i < T; ++i) {
      const float* q = base + (size_t)i * 3 * C + h * hs;
      const float* dO = dout + ((size_t)b * T + i) * C + h * hs;
      const size_t row = bh * T + i;
      const float p = expf(dot(q, k, hs) * scale - lse[row]);
      const float ds = p * (dot(dO, v, hs) - delta[row]);
      for (int d = 0; d < hs; ++d) {
        dv[d] += p * dO[d];
        dk[d] += ds * q[d];
      }
    }
    for (int d = 0; d < hs; ++d) dk[d] *= scale;
  }
}

void check_dims(const char* who, int B, int T, int C, int NH) {
  cuda_detail::check_nonnegative(who, "B", B);
  cuda_detail::check_nonnegative(who, "T", T);
  if (NH < 1 || C < 1 || C % NH != 0)
    throw std::invalid_argument(std::string(who) + ": C = " + std::to_string(C) + ", NH = " + std::to_string(NH) +
                                " (expected NH >= 1 heads dividing C)");
}

}  // namespace

void attention_fp32_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH, void* stream) {
  check_dims("cuda::attention_fp32_forward", B, T, C, NH);
  const size_t rows = (size_t)B * NH * T;
  if (rows == 0) return;
  const float scale = 1.f / std::sqrt(float(C / NH));
  attention_fp32_forward_kernel<<<cuda_detail::grid_for(rows, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(
      out, lse, qkv, B, T, C, NH, scale);
  CUDA_CHECK_LAUNCH("attention_fp32_forward_kernel");
}

void attention_fp32_backward(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                             const float* lse, int B, int T, int C, int NH, void* stream) {
  check_dims("cuda::attention_fp32_backward", B, T, C, NH);
  const size_t rows = (size_t)B * NH * T;
  if (rows == 0) return;
  const float scale = 1.f / std::sqrt(float(C / NH));
  const cudaStream_t s = cuda_detail::as_stream(stream);
  const unsigned grid = cuda_detail::grid_for(rows, kThreads);
  attention_fp32_dq_kernel<<<grid, kThreads, 0, s>>>(dqkv, delta, dout, qkv, out, lse, B, T, C, NH, scale);
  CUDA_CHECK_LAUNCH("attention_fp32_dq_kernel");
  attention_fp32_dkdv_kernel<<<grid, kThreads, 0, s>>>(dqkv, delta, dout, qkv, lse, B, T, C, NH, scale);
  CUDA_CHECK_LAUNCH("attention_fp32_dkdv_kernel");
}

}  // namespace cuda
}  // namespace covenant

// AdamW (bias-corrected, decoupled weight decay) on fp32 master weights on a CUDA device: one element-wise
// pass reading params, m, v, grads once and writing params, m, v once. Oracle: adamw_update in
// native/kernels/cpu/adamw.cpp. The bias corrections and the decay factor are computed on the host with the
// same std::pow calls, and each element runs the CPU's fp32 operations in the CPU's order (IEEE division and
// square root, no FMA contraction in this build), so the results are expected to match bit for bit.
#include <cmath>

#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

using cuda_detail::grid_for;

constexpr unsigned kThreads = 256;

// params, m, v (n) UPDATED in place.
__global__ void adamw_kernel(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
                             const float* __restrict__ grads, size_t n, float lr, float beta1, float beta2, float eps,
                             float grad_scale, float bc1, float bc2, float decay) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float g = grads[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / bc1, vhat = vi / bc2;
    params[i] = params[i] * decay - lr * mhat / (sqrtf(vhat) + eps);
  }
}

}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t, void* stream) {
  if (t < 1)
    throw std::invalid_argument("cuda::adamw_update: t = " + std::to_string(t) +
                                " (expected the 1-based step number, >= 1)");
  if (n == 0) return;
  const float bc1 = 1.f - std::pow(beta1, float(t));
  const float bc2 = 1.f - std::pow(beta2, float(t));
  const float decay = 1.f - lr * weight_decay;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(
      params, m, v, grads, n, lr, beta1, beta2, eps, grad_scale, bc1, bc2, decay);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace cuda
}  // namespace covenant

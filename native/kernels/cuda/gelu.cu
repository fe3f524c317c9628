// GELU with the tanh approximation (as GPT-2) on a CUDA device, forward and backward (fp32), element-wise
// grid-stride loops reading and writing each element once. Oracle: gelu_forward / gelu_backward in
// native/kernels/cpu/gelu.cpp: the same fp32 operations in the same order (no FMA contraction in this build);
// only tanhf may differ from the host's by an ulp or two.
#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

using cuda_detail::grid_for;

constexpr unsigned kThreads = 256;
constexpr float kScale = 0.7978845608028654f;  // sqrt(2/pi)

// out (n) = gelu(inp) (OVERWRITES).
__global__ void gelu_forward_kernel(float* __restrict__ out, const float* __restrict__ inp, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    const float cube = 0.044715f * x * x * x;
    out[i] = 0.5f * x * (1.f + tanhf(kScale * (x + cube)));
  }
}

// dinp (n) += gelu'(inp) * dout (ACCUMULATES).
__global__ void gelu_backward_kernel(float* __restrict__ dinp, const float* __restrict__ inp,
                                     const float* __restrict__ dout, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    const float cube = 0.044715f * x * x * x;
    const float th = tanhf(kScale * (x + cube));
    const float sech2 = 1.f - th * th;
    const float grad = 0.5f * (1.f + th) + 0.5f * x * sech2 * kScale * (1.f + 3.f * 0.044715f * x * x);
    dinp[i] += grad * dout[i];
  }
}

}  // namespace

void gelu_forward(float* out, const float* inp, size_t n, void* stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, inp, n);
  CUDA_CHECK_LAUNCH("gelu_forward_kernel");
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, void* stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(dinp, inp, dout, n);
  CUDA_CHECK_LAUNCH("gelu_backward_kernel");
}

}  // namespace cuda
}  // namespace covenant

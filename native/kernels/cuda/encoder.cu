// Token + position embedding on a CUDA device, forward and backward (fp32). Oracle: encoder_forward /
// encoder_backward in native/kernels/cpu/layernorm.cpp; both kernels here are bit-identical with them.
// Dimensions: B batch, T time, C channels; inp (B,T) token ids, wte (V,C), wpe (maxT,C), out/dout (B,T,C).
//
// The backward is deterministic without atomics or sorting: dwpe has one thread per (t, c) summing over b in
// order; dwte has one thread per channel c walking the rows bt = 0, 1, ... in order (the CPU's order), so a
// token that repeats is accumulated by the same thread. The price is that dwte is parallel over C only: its
// time grows with B*T at about one L2 round trip per row (a sort-by-token version would lift that).
#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

using cuda_detail::grid_for;

constexpr unsigned kThreads = 256;

// out (B,T,C) = wte[inp] + wpe[t] (OVERWRITES).
__global__ void encoder_forward_kernel(float* __restrict__ out, const int32_t* __restrict__ inp,
                                       const float* __restrict__ wte, const float* __restrict__ wpe, size_t n, int T,
                                       int C) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t bt = i / C;
    const int c = static_cast<int>(i % C);
    const int t = static_cast<int>(bt % T);
    out[i] = __fadd_rn(wte[size_t(inp[bt]) * C + c], wpe[size_t(t) * C + c]);
  }
}

// dwte (V,C) += sum over rows bt with inp[bt] == token of dout[bt]; one thread per channel, rows in order.
__global__ void encoder_backward_wte_kernel(float* __restrict__ dwte, const float* __restrict__ dout,
                                            const int32_t* __restrict__ inp, size_t BT, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (size_t bt = 0; bt < BT; ++bt) {
    float* te = dwte + size_t(inp[bt]) * C + c;
    *te = __fadd_rn(*te, dout[bt * C + c]);
  }
}

// dwpe (T,C) += sum over b of dout[b, t]; one thread per (t, c), b in order.
__global__ void encoder_backward_wpe_kernel(float* __restrict__ dwpe, const float* __restrict__ dout, int B, int T,
                                            int C) {
  const size_t TC = size_t(T) * C;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < TC; i += size_t(gridDim.x) * blockDim.x) {
    float acc = dwpe[i];
    for (int b = 0; b < B; ++b) acc = __fadd_rn(acc, dout[size_t(b) * TC + i]);
    dwpe[i] = acc;
  }
}

void check_dims(const char* who, int B, int T, int C) {
  cuda_detail::check_nonnegative(who, "B", B);
  cuda_detail::check_nonnegative(who, "T", T);
  cuda_detail::check_nonnegative(who, "C", C);
}

}  // namespace

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B, int T, int C,
                     void* stream) {
  check_dims("cuda::encoder_forward", B, T, C);
  const size_t n = size_t(B) * T * C;
  if (n == 0) return;
  encoder_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, inp, wte, wpe,
                                                                                                  n, T, C);
  CUDA_CHECK_LAUNCH("encoder_forward_kernel");
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B, int T, int C,
                      void* stream) {
  check_dims("cuda::encoder_backward", B, T, C);
  if (size_t(B) * T * C == 0) return;
  const cudaStream_t s = cuda_detail::as_stream(stream);
  // 64 threads per block spreads the few channel threads over more SMs.
  encoder_backward_wte_kernel<<<grid_for(size_t(C), 64), 64, 0, s>>>(dwte, dout, inp, size_t(B) * T, C);
  CUDA_CHECK_LAUNCH("encoder_backward_wte_kernel");
  encoder_backward_wpe_kernel<<<grid_for(size_t(T) * C, kThreads), kThreads, 0, s>>>(dwpe, dout, B, T, C);
  CUDA_CHECK_LAUNCH("encoder_backward_wpe_kernel");
}

}  // namespace cuda
}  // namespace covenant

// The GPT engine's small fp32 ops on a CUDA device (declared in include/covenant/cuda_kernels.h): bias add and
// its backward, the residual sum, the difference of two buffers (the outer loop's Δ), fp32 <-> bf16
// conversion for the bf16 attention kernels, and deterministic double-precision reductions (the mean loss,
// the global gradient norm). Oracles: matmul_forward / matmul_backward's bias terms, residual_forward and
// sum_squares in native/kernels/cpu/; for the difference, the host's fp32 subtraction.
#include <cuda_bf16.h>

#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

using cuda_detail::grid_for;

constexpr unsigned kThreads = 256;
constexpr unsigned kReduceBlocks = 256;  // partial sums (fixed: the partition depends on n only)
constexpr unsigned kReduceThreads = 256;

// out (N,OC) += bias (OC).
__global__ void add_bias_kernel(float* __restrict__ out, const float* __restrict__ bias, size_t n, int OC) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] += bias[i % OC];
}

// dbias (OC) += sum over rows of dout (N,OC); one thread per column, rows in order.
__global__ void bias_backward_kernel(float* __restrict__ dbias, const float* __restrict__ dout, int N, int OC) {
  for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < OC; o += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int r = 0; r < N; ++r) s += dout[(size_t)r * OC + o];
    dbias[o] += s;
  }
}

__global__ void residual_kernel(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b,
                                size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void difference_kernel(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b,
                                  size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __fsub_rn(a[i], b[i]);
}

__global__ void f32_to_bf16_kernel(uint16_t* __restrict__ out, const float* __restrict__ inp, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(inp[i]));
}

__global__ void bf16_to_f32_kernel(float* __restrict__ out, const uint16_t* __restrict__ inp, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __uint_as_float(uint32_t(inp[i]) << 16);
}

// Block sum of a double (every thread gets nothing back; thread 0 returns the total).
__device__ double block_sum(double v) {
  __shared__ double sh[kReduceThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = kReduceThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// partials (kReduceBlocks): block k sums the contiguous chunk k of x, each thread a strided part of it.
__global__ void __launch_bounds__(kReduceThreads) partial_sums_kernel(double* __restrict__ partials,
                                                                      const float* __restrict__ x, size_t n,
                                                                      size_t chunk, bool squares) {
  const size_t lo = blockIdx.x * chunk;
  const size_t hi = lo + chunk < n ? lo + chunk : n;
  double s = 0.0;
  for (size_t i = lo + threadIdx.x; i < hi; i += kReduceThreads) {
    const double v = x[i];
    s += squares ? v * v : v;
  }
  const double total = block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kReduceThreads) final_sum_kernel(double* __restrict__ result,
                                                                   const double* __restrict__ partials,
                                                                   unsigned count) {
  double s = 0.0;
  for (unsigned i = threadIdx.x; i < count; i += kReduceThreads) s += partials[i];
  const double total = block_sum(s);
  if (threadIdx.x == 0) *result = total;
}

}  // namespace

void add_bias(float* out, const float* bias, int N, int OC, void* stream) {
  cuda_detail::check_nonnegative("cuda::add_bias", "N", N);
  cuda_detail::check_nonnegative("cuda::add_bias", "OC", OC);
  const size_t n = (size_t)N * OC;
  if (n == 0) return;
  add_bias_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, bias, n, OC);
  CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void bias_backward(float* dbias, const float* dout, int N, int OC, void* stream) {
  cuda_detail::check_nonnegative("cuda::bias_backward", "N", N);
  cuda_detail::check_nonnegative("cuda::bias_backward", "OC", OC);
  if (OC == 0) return;
  bias_backward_kernel<<<grid_for((size_t)OC, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(dbias, dout, N,
                                                                                                        OC);
  CUDA_CHECK_LAUNCH("bias_backward_kernel");
}

void residual_forward(float* out, const float* a, const float* b, size_t n, void* stream) {
  if (n == 0) return;
  residual_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH("residual_kernel");
}

void difference(float* out, const float* a, const float* b, size_t n, void* stream) {
  if (n == 0) return;
  difference_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH("difference_kernel");
}

void f32_to_bf16(uint16_t* out, const float* inp, size_t n, void* stream) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, inp, n);
  CUDA_CHECK_LAUNCH("f32_to_bf16_kernel");
}

void bf16_to_f32(float* out, const uint16_t* inp, size_t n, void* stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<grid_for(n, kThreads), kThreads, 0, cuda_detail::as_stream(stream)>>>(out, inp, n);
  CUDA_CHECK_LAUNCH("bf16_to_f32_kernel");
}

size_t reduce_scratch_doubles() { return kReduceBlocks; }

void sum_to_double(double* result, double* scratch, const float* x, size_t n, bool squares, void* stream) {
  const cudaStream_t s = cuda_detail::as_stream(stream);
  const size_t chunk = (n + kReduceBlocks - 1) / kReduceBlocks;
  // With n == 0 every block writes a zero partial, so *result is 0.
  partial_sums_kernel<<<kReduceBlocks, kReduceThreads, 0, s>>>(scratch, x, n, chunk == 0 ? 1 : chunk, squares);
  CUDA_CHECK_LAUNCH("partial_sums_kernel");
  final_sum_kernel<<<1, kReduceThreads, 0, s>>>(result, scratch, kReduceBlocks);
  CUDA_CHECK_LAUNCH("final_sum_kernel");
}

}  // namespace cuda
}  // namespace covenant

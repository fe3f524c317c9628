// LayerNorm over the last dimension on a CUDA device, forward and backward (fp32, eps 1e-5). Oracle:
// layernorm_forward / layernorm_backward in native/kernels/cpu/layernorm.cpp (same formulas, same fp32
// operation order per element; the row sums are warp trees instead of a sequential loop, so results agree to
// rounding, not bit for bit). Dimensions: N = B*T rows, C channels; inp/out/dout/dinp (N,C), mean/rstd (N),
// weight/bias (C).
//
// Forward: one warp per row; the row is read three times (mean, variance, output), the second and third
// from L1/L2, and each output written once. Backward: one kernel computes dinp (one warp per row) and, per
// block of kRowsPerBlock rows, per-channel partial sums of dweight and dbias in row order into scratch; a
// second kernel adds the partials in block order. No atomics: deterministic, and the order depends on N only.
#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

using cuda_detail::grid_for;
using cuda_detail::warp_sum;

constexpr unsigned kThreads = 256;  // 8 warps
constexpr unsigned kWarps = kThreads / 32;
constexpr int kRowsPerBlock = 32;   // backward: rows whose dweight/dbias a block sums into one partial
constexpr float kEps = 1e-5f;

// out (N,C), mean (N), rstd (N) (OVERWRITE).
__global__ void layernorm_forward_kernel(float* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                         const float* __restrict__ inp, const float* __restrict__ weight,
                                         const float* __restrict__ bias, int N, int C) {
  const int lane = threadIdx.x & 31;
  for (size_t r = blockIdx.x * size_t(kWarps) + (threadIdx.x >> 5); r < size_t(N); r += size_t(gridDim.x) * kWarps) {
    const float* x = inp + r * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += x[c];
    const float m = warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float d = x[c] - m;
      v += d * d;
    }
    const float var = warp_sum(v) / C;
    const float rs = 1.f / sqrtf(var + kEps);
    float* o = out + r * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * rs * weight[c] + bias[c];
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
  }
}

// dinp (N,C) += ...; partial (gridDim.x, 2C): [0,C) dweight and [C,2C) dbias partial sums of this block's rows
// (OVERWRITTEN). One block per kRowsPerBlock rows.
__global__ void layernorm_backward_kernel(float* __restrict__ dinp, float* __restrict__ partial,
                                          const float* __restrict__ dout, const float* __restrict__ inp,
                                          const float* __restrict__ weight, const float* __restrict__ mean,
                                          const float* __restrict__ rstd, int N, int C) {
  const int lane = threadIdx.x & 31;
  const int r0 = blockIdx.x * kRowsPerBlock;
  const int r1 = min(N, r0 + kRowsPerBlock);
  for (int r = r0 + int(threadIdx.x >> 5); r < r1; r += kWarps) {
    const float* x = inp + size_t(r) * C;
    const float* d = dout + size_t(r) * C;
    const float m = mean[r], s = rstd[r];
    float a = 0.f, b = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float norm = (x[c] - m) * s;
      const float dnorm = weight[c] * d[c];
      a += dnorm;
      b += dnorm * norm;
    }
    const float dnorm_mean = warp_sum(a) / C;
    const float dnorm_norm_mean = warp_sum(b) / C;
    float* di = dinp + size_t(r) * C;
    for (int c = lane; c < C; c += 32) {
      const float norm = (x[c] - m) * s;
      const float dnorm = weight[c] * d[c];
      di[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
  // The rows were just read by this block: these reads mostly hit L1/L2. Threads walk adjacent channels.
  float* pw = partial + size_t(blockIdx.x) * 2 * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float dw = 0.f, db = 0.f;
    for (int r = r0; r < r1; ++r) {
      const float dv = dout[size_t(r) * C + c];
      dw += (inp[size_t(r) * C + c] - mean[r]) * rstd[r] * dv;
      db += dv;
    }
    pw[c] = dw;
    pw[C + c] = db;
  }
}

// dweight (C) += sum of the partials, dbias (C) += likewise, in block order.
__global__ void layernorm_param_grad_kernel(float* __restrict__ dweight, float* __restrict__ dbias,
                                            const float* __restrict__ partial, int nblocks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.f, db = 0.f;
  for (int b = 0; b < nblocks; ++b) {
    dw += partial[size_t(b) * 2 * C + c];
    db += partial[size_t(b) * 2 * C + C + c];
  }
  dweight[c] += dw;
  dbias[c] += db;
}

int backward_blocks(int N) { return (N + kRowsPerBlock - 1) / kRowsPerBlock; }

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, void* stream) {
  cuda_detail::check_nonnegative("cuda::layernorm_forward", "N", N);
  cuda_detail::check_nonnegative("cuda::layernorm_forward", "C", C);
  if (N == 0 || C == 0) return;
  layernorm_forward_kernel<<<grid_for(size_t(N), kWarps), kThreads, 0, cuda_detail::as_stream(stream)>>>(
      out, mean, rstd, inp, weight, bias, N, C);
  CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

size_t layernorm_backward_scratch_floats(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  return size_t(backward_blocks(N)) * 2 * size_t(C);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd, int N, int C,
                        void* stream) {
  cuda_detail::check_nonnegative("cuda::layernorm_backward", "N", N);
  cuda_detail::check_nonnegative("cuda::layernorm_backward", "C", C);
  if (N == 0 || C == 0) return;
  const cudaStream_t s = cuda_detail::as_stream(stream);
  const int nblocks = backward_blocks(N);
  layernorm_backward_kernel<<<nblocks, kThreads, 0, s>>>(dinp, scratch, dout, inp, weight, mean, rstd, N, C);
  CUDA_CHECK_LAUNCH("layernorm_backward_kernel");
  layernorm_param_grad_kernel<<<grid_for(size_t(C), kThreads), kThreads, 0, s>>>(dweight, dbias, scratch, nblocks, C);
  CUDA_CHECK_LAUNCH("layernorm_param_grad_kernel");
}

}  // namespace cuda
}  // namespace covenant

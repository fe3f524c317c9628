// Softmax cross-entropy fused with its backward on a CUDA device (fp32 logits). Oracle:
// crossentropy_forward_backward in native/kernels/cpu/crossentropy.cpp. Dimensions: N rows, V vocabulary;
// logits (N,V), targets (N), losses (N).
//
// One thread block per row. Pass 1 reads the row once with an online softmax: each thread keeps a running max
// and a sum of exp(x - max) (the sum in double, as the CPU's), and the block merges them; loss = max +
// log(sum) - x[target]. Pass 2 (only with dlogits_scale != 0) reads the row again and overwrites it in place
// with exp(x - max) / sum * scale, minus scale at the target, the CPU's fp32 operations in its order. The
// target logit is read before the block barrier that precedes any write.
#include <cfloat>

#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

constexpr unsigned kThreads = 512;

// Merges the running (max, sum) pair (mb, sb) into (ma, sa); an empty side has max -inf and sum 0.
__device__ __forceinline__ void merge(float& ma, double& sa, float mb, double sb) {
  if (mb == -INFINITY) return;
  if (ma == -INFINITY) {
    ma = mb;
    sa = sb;
    return;
  }
  const float m = fmaxf(ma, mb);
  sa = sa * double(expf(ma - m)) + sb * double(expf(mb - m));
  ma = m;
}

// losses (N) OVERWRITTEN; logits (N,V) overwritten in place by dloss/dlogits * dlogits_scale when it is not 0.
__global__ void crossentropy_kernel(float* __restrict__ logits, float* __restrict__ losses,
                                    const int32_t* __restrict__ targets, int V, float dlogits_scale) {
  __shared__ float sh_m[32];
  __shared__ double sh_s[32];
  const size_t r = blockIdx.x;
  float* x = logits + r * V;
  const int target = targets[r];
  const bool target_ok = target >= 0 && target < V;
  const float x_target = target_ok ? x[target] : 0.f;

  float m = -INFINITY;
  double s = 0.0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float xv = x[v];
    if (xv > m) {
      s = m == -INFINITY ? 0.0 : s * double(expf(m - xv));
      m = xv;
    }
    s += double(expf(xv - m));
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float mo = __shfl_xor_sync(0xffffffffu, m, o);
    const double so = __shfl_xor_sync(0xffffffffu, s, o);
    merge(m, s, mo, so);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh_m[warp] = m;
    sh_s[warp] = s;
  }
  __syncthreads();  // also orders the reads of x above before the writes below
  m = -INFINITY;
  s = 0.0;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) merge(m, s, sh_m[w], sh_s[w]);  // same order in every thread

  if (threadIdx.x == 0) {
    const double logz = double(m) + log(s);
    losses[r] = target_ok ? float(logz - double(x_target)) : __int_as_float(0x7fc00000);
  }
  if (dlogits_scale != 0.f && target_ok) {
    const float inv = float(1.0 / s);
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
      float d = expf(x[v] - m) * inv * dlogits_scale;
      if (v == target) d -= dlogits_scale;
      x[v] = d;
    }
  }
}

}  // namespace

void crossentropy_forward_backward(float* logits, float* losses, const int32_t* targets, int N, int V,
                                   float dlogits_scale, void* stream) {
  cuda_detail::check_nonnegative("cuda::crossentropy_forward_backward", "N", N);
  if (V < 1)
    throw std::invalid_argument("cuda::crossentropy_forward_backward: V = " + std::to_string(V) +
                                " (expected a vocabulary of at least 1)");
  if (N == 0) return;
  crossentropy_kernel<<<unsigned(N), kThreads, 0, cuda_detail::as_stream(stream)>>>(logits, losses, targets, V,
                                                                                  dlogits_scale);
  CUDA_CHECK_LAUNCH("crossentropy_kernel");
}

}  // namespace cuda
}  // namespace covenant

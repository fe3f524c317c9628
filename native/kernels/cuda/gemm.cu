// fp32 GEMM on a CUDA device (include/covenant/cuda_gemm.h): cuBLAS where the build found it, else our own
// shared-memory tiled kernel. Oracle: gemm_ref (native/kernels/cpu/gemm_ref.cpp).
//
// Own kernel: a 256-thread block owns a 64x64 tile of C; per 16-deep slice of K it stages op(A) (64x16) and
// op(B) (16x64) in shared memory (stored k-major, rows padded by 4 floats), every thread loading 4 elements of
// each, coalesced along the stored matrix's contiguous dimension whatever the transposition; thread (ty, tx)
// accumulates C rows m0 + ty + 16i and columns n0 + tx + 16j (i, j < 4) in registers, so the 16 threads of a
// half-warp write 16 consecutive floats. Out-of-range elements load as 0 and are never stored. Each output is
// a sum over k in increasing order (fp32, no FMA contraction in this build): deterministic.
#include "common.cuh"
#include "covenant/cuda_gemm.h"

#ifdef COVENANT_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace covenant {
namespace cuda {

namespace {

constexpr int kTile = 64;
constexpr int kDepth = 16;
constexpr int kThreads = 256;
constexpr int kPad = 4;

template <bool TA, bool TB>
__global__ void __launch_bounds__(kThreads) gemm_tiled_kernel(int M, int N, int K, float alpha,
                                                              const float* __restrict__ A, int lda,
                                                              const float* __restrict__ B, int ldb, float beta,
                                                              float* __restrict__ C, int ldc) {
  __shared__ float As[kDepth][kTile + kPad];  // As[k][m] = op(A)(m0 + m, k0 + k)
  __shared__ float Bs[kDepth][kTile + kPad];  // Bs[k][n] = op(B)(k0 + k, n0 + n)
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int k0 = 0; k0 < K; k0 += kDepth) {
    for (int r = 0; r < 4; ++r) {
      const int e = tid + kThreads * r;  // 0 .. 1023
      // op(A)(m, k): A[m * lda + k], or A[k * lda + m] when transposed; contiguous index fastest.
      int mm, ka;
      if (TA) { mm = e % kTile; ka = e / kTile; } else { mm = e / kDepth; ka = e % kDepth; }
      const int gm = m0 + mm, gk = k0 + ka;
      float av = 0.f;
      if (gm < M && gk < K) av = TA ? A[(size_t)gk * lda + gm] : A[(size_t)gm * lda + gk];
      As[ka][mm] = av;
      // op(B)(k, n): B[k * ldb + n], or B[n * ldb + k] when transposed.
      int nn, kb;
      if (TB) { nn = e / kDepth; kb = e % kDepth; } else { nn = e % kTile; kb = e / kTile; }
      const int gn = n0 + nn, gk2 = k0 + kb;
      float bv = 0.f;
      if (gn < N && gk2 < K) bv = TB ? B[(size_t)gn * ldb + gk2] : B[(size_t)gk2 * ldb + gn];
      Bs[kb][nn] = bv;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kDepth; ++k) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = As[k][ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= M) continue;
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= N) continue;
      float* c = C + (size_t)m * ldc + n;
      *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
    }
  }
}

void check_dims(const char* who, Trans ta, Trans tb, int M, int N, int K, int lda, int ldb, int ldc) {
  cuda_detail::check_nonnegative(who, "M", M);
  cuda_detail::check_nonnegative(who, "N", N);
  cuda_detail::check_nonnegative(who, "K", K);
  const int need_a = ta == Trans::N ? K : M, need_b = tb == Trans::N ? N : K;
  if (lda < (need_a > 1 ? need_a : 1))
    throw std::invalid_argument(std::string(who) + ": lda = " + std::to_string(lda) + " < " + std::to_string(need_a));
  if (ldb < (need_b > 1 ? need_b : 1))
    throw std::invalid_argument(std::string(who) + ": ldb = " + std::to_string(ldb) + " < " + std::to_string(need_b));
  if (ldc < (N > 1 ? N : 1))
    throw std::invalid_argument(std::string(who) + ": ldc = " + std::to_string(ldc) + " < " + std::to_string(N));
  if ((M + kTile - 1) / kTile > 65535)
    throw std::invalid_argument(std::string(who) + ": M = " + std::to_string(M) + " exceeds the grid's y limit");
}

#ifdef COVENANT_HAVE_CUBLAS
const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (other)";
  }
}
#define CUBLAS_CHECK(call)                                                                                  \
  do {                                                                                                      \
    const cublasStatus_t covenant_cublas_st_ = (call);                                                      \
    if (covenant_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      throw std::runtime_error(std::string("cuBLAS error: ") + #call + " failed at " + __FILE__ + ":" +      \
                               std::to_string(__LINE__) + ": " + cublas_status_name(covenant_cublas_st_)); \
  } while (0)
#endif

}  // namespace

bool gemm_have_cublas() {
#ifdef COVENANT_HAVE_CUBLAS
  return true;
#else
  return false;
#endif
}

const char* gemm_impl_name(GpuGemmImpl impl) {
  switch (impl) {
    case GpuGemmImpl::Auto: return gemm_have_cublas() ? "cublas" : "own";
    case GpuGemmImpl::Own: return "own";
    case GpuGemmImpl::Cublas: return "cublas";
  }
  return "?";
}

void gemm_own(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc, void* stream) {
  check_dims("cuda::gemm_own", ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  const dim3 grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile);
  const cudaStream_t s = cuda_detail::as_stream(stream);
  // K == 0 still runs: C = beta * C (alpha * empty sum).
  if (ta == Trans::N && tb == Trans::N)
    gemm_tiled_kernel<false, false><<<grid, kThreads, 0, s>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (ta == Trans::N)
    gemm_tiled_kernel<false, true><<<grid, kThreads, 0, s>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (tb == Trans::N)
    gemm_tiled_kernel<true, false><<<grid, kThreads, 0, s>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    gemm_tiled_kernel<true, true><<<grid, kThreads, 0, s>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  CUDA_CHECK_LAUNCH("gemm_tiled_kernel");
}

GpuGemm::GpuGemm(GpuGemmImpl impl) : impl_(impl) {
  if (impl_ == GpuGemmImpl::Auto) impl_ = gemm_have_cublas() ? GpuGemmImpl::Cublas : GpuGemmImpl::Own;
  if (impl_ == GpuGemmImpl::Cublas) {
#ifdef COVENANT_HAVE_CUBLAS
    cublasHandle_t h = nullptr;
    CUBLAS_CHECK(cublasCreate(&h));
    handle_ = h;
#else
    throw std::invalid_argument("GPU gemm 'cublas' is not available: this build found no cuBLAS "
                                "(HINT: install the CUDA toolkit's cuBLAS, then rebuild)");
#endif
  }
}

GpuGemm::~GpuGemm() {
#ifdef COVENANT_HAVE_CUBLAS
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
#endif
}

void GpuGemm::gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                   int ldb, float beta, float* C, int ldc, void* stream) {
  if (impl_ == GpuGemmImpl::Own) {
    gemm_own(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, stream);
    return;
  }
#ifdef COVENANT_HAVE_CUBLAS
  check_dims("cuda::GpuGemm::gemm", ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  // Row-major C (M,N) is column-major C^T (N,M) = op(B)^T op(A)^T: swap the operands, keep each one's flag.
  cublasHandle_t h = static_cast<cublasHandle_t>(handle_);
  CUBLAS_CHECK(cublasSetStream(h, cuda_detail::as_stream(stream)));
  const cublasOperation_t opb = tb == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t opa = ta == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T;
  CUBLAS_CHECK(cublasGemmEx(h, opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F,
                            ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
#endif
}

}  // namespace cuda
}  // namespace covenant

// Single-precision GEMM on a CUDA device, row-major like covenant/gemm.h: C(M,N) = alpha * op(A)(M,K) *
// op(B)(K,N) + beta * C. op(A) = A (stored (M,K), lda >= K) or A^T (stored (K,M), lda >= M); likewise for B.
// beta == 0 ignores C's contents. Every pointer is DEVICE memory; `stream` is a cudaStream_t as void* (nullptr:
// the legacy default stream); the calls are asynchronous and check their launch (std::runtime_error naming
// the call, file and line). No CUDA types appear here.
//
// Two implementations behind one handle:
//   - cuBLAS (only where CMake found it: COVENANT_HAVE_CUBLAS): cublasGemmEx on fp32 tensors with
//     CUBLAS_COMPUTE_32F_FAST_16BF, i.e. bf16 tensor-core products with fp32 accumulation;
//   - our own kernel (always built): shared-memory tiled fp32 (64x64 tiles of C, 16-deep slices of K, 4x4
//     outputs per thread), fp32 accumulation in a fixed order, so results are deterministic. Correctness
//     first: it is several times slower than cuBLAS.
#pragma once
#include <string>

#include "covenant/gemm.h"  // Trans

namespace covenant {
namespace cuda {

enum class GpuGemmImpl { Auto, Own, Cublas };

// True when this build links cuBLAS.
bool gemm_have_cublas();
const char* gemm_impl_name(GpuGemmImpl impl);

// Owns the library state one engine needs (a cuBLAS handle where used). Not thread-safe: one per engine.
class GpuGemm {
 public:
  // Auto: cuBLAS when the build has it, else Own. Cublas without cuBLAS throws std::invalid_argument.
  explicit GpuGemm(GpuGemmImpl impl = GpuGemmImpl::Auto);
  ~GpuGemm();
  GpuGemm(const GpuGemm&) = delete;
  GpuGemm& operator=(const GpuGemm&) = delete;
  GpuGemmImpl impl() const { return impl_; }

  void gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc, void* stream);

 private:
  GpuGemmImpl impl_;
  void* handle_ = nullptr;  // cublasHandle_t where impl_ == Cublas
};

// Our kernel directly (the GPU suite tests it against gemm_ref).
void gemm_own(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc, void* stream);

}  // namespace cuda
}  // namespace covenant

// Single-precision GEMM, row-major: C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C.
// op(A) = A (lda >= K) or A^T (A stored (K,M), lda >= M); likewise for B. beta == 0 ignores C's contents.
// Backends: `Blas` (system BLAS, one BLAS thread per pool thread), `Packed` (our cache-blocked,
// register-tiled kernel, AVX-512/AVX2/portable chosen at run time) and `Ref` (the naive oracle).
// Every backend splits C statically over the pool, so results are deterministic for a thread count.
#pragma once
#include <string>

namespace covenant {

class ThreadPool;

enum class Trans { N, T };
enum class GemmBackend { Auto, Blas, Packed, Ref };

// The backend `Auto` resolves to: Blas when the build found one, else Packed.
GemmBackend gemm_default_backend();
bool gemm_have_blas();
const char* gemm_backend_name(GemmBackend b);
// Which SIMD micro-kernel the packed backend uses on this CPU ("avx512", "avx2", "portable").
const char* gemm_packed_isa();
// Description of the BLAS library and the kernel it picked for this CPU (OpenBLAS core name), or "none".
std::string gemm_blas_info();

void gemm(GemmBackend backend, Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, ThreadPool* pool);

// Serial entry points (one thread), used by the pool-splitting driver, the tests and the bench.
void gemm_ref(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
              int ldb, float beta, float* C, int ldc);
void gemm_packed_serial(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                        const float* B, int ldb, float beta, float* C, int ldc);
// BLAS on the calling thread only. Throws std::runtime_error when built without BLAS.
void gemm_blas_serial(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc);
// BLAS with its own threading (nthreads of BLAS's own pool): the "OpenBLAS's own figure" peer in the bench.
void gemm_blas_own_threads(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                           const float* B, int ldb, float beta, float* C, int ldc, int nthreads);

}  // namespace covenant

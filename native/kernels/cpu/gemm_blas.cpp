// System BLAS entry points. We declare the few CBLAS symbols we use, so no particular cblas.h is needed.
#include <stdexcept>
#include <string>

#include "covenant/gemm.h"

#ifdef COVENANT_HAVE_BLAS
extern "C" {
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
#ifdef COVENANT_HAVE_OPENBLAS
void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);
char* openblas_get_corename(void);
char* openblas_get_config(void);
#endif
}
#endif

namespace covenant {

#ifdef COVENANT_HAVE_BLAS
namespace {
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

void set_blas_threads(int n) {
#ifdef COVENANT_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#else
  (void)n;
#endif
}

void call(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(kRowMajor, ta == Trans::N ? kNoTrans : kTrans, tb == Trans::N ? kNoTrans : kTrans, M, N, K, alpha,
              A, lda, B, ldb, beta, C, ldc);
}

struct SingleThreadedBlas {
  SingleThreadedBlas() { set_blas_threads(1); }
};
void ensure_single_threaded() { static SingleThreadedBlas once; }
}  // namespace

bool gemm_have_blas() { return true; }

std::string gemm_blas_info() {
#ifdef COVENANT_HAVE_OPENBLAS
  return std::string("OpenBLAS core=") + openblas_get_corename() + " config=" + openblas_get_config();
#else
  return "system BLAS (vendor unknown)";
#endif
}

void gemm_blas_serial(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
  ensure_single_threaded();
  call(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_blas_own_threads(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                           const float* B, int ldb, float beta, float* C, int ldc, int nthreads) {
  set_blas_threads(nthreads);
  call(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  set_blas_threads(1);
}
#else
bool gemm_have_blas() { return false; }
std::string gemm_blas_info() { return "none"; }
void gemm_blas_serial(Trans, Trans, int, int, int, float, const float*, int, const float*, int, float, float*, int) {
  throw std::runtime_error("GEMM backend 'blas' is not available: this build found no BLAS. HINT: apt-get install libopenblas-dev, then rebuild (npm run build:native)");
}
void gemm_blas_own_threads(Trans, Trans, int, int, int, float, const float*, int, const float*, int, float, float*,
                           int, int) {
  throw std::runtime_error("GEMM backend 'blas' is not available: this build found no BLAS. HINT: apt-get install libopenblas-dev, then rebuild (npm run build:native)");
}
#endif

}  // namespace covenant

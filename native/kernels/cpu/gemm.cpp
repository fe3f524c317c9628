// GEMM driver: picks the backend and splits C over the pool in row or column stripes (static, so the
// result does not depend on thread timing).
#include "covenant/gemm.h"

#include <stdexcept>

#include "covenant/thread_pool.h"

namespace covenant {

GemmBackend gemm_default_backend() { return gemm_have_blas() ? GemmBackend::Blas : GemmBackend::Packed; }

const char* gemm_backend_name(GemmBackend b) {
  switch (b) {
    case GemmBackend::Auto: return "auto";
    case GemmBackend::Blas: return "blas";
    case GemmBackend::Packed: return "packed";
    case GemmBackend::Ref: return "ref";
  }
  return "?";
}

namespace {
using SerialGemm = void (*)(Trans, Trans, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);
SerialGemm serial_for(GemmBackend b) {
  switch (b) {
    case GemmBackend::Blas: return gemm_blas_serial;
    case GemmBackend::Packed: return gemm_packed_serial;
    case GemmBackend::Ref: return gemm_ref;
    default: break;
  }
  throw std::logic_error("unresolved GEMM backend");
}
}  // namespace

void gemm(GemmBackend backend, Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, ThreadPool* pool) {
  if (M <= 0 || N <= 0) return;
  if (backend == GemmBackend::Auto) backend = gemm_default_backend();
  SerialGemm fn = serial_for(backend);
  int nt = pool ? pool->size() : 1;
  long work = (long)M * N * (long)(K > 0 ? K : 1);
  if (nt == 1 || work < 64L * 64 * 64) {
    fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the longer side of C; stripes are multiples of 32 so micro-tiles stay whole.
  if (M >= N) {
    pool->parallel_for(M, [&](int64_t b, int64_t e, int) {
      const float* Ab = ta == Trans::N ? A + b * lda : A + b;
      fn(ta, tb, int(e - b), N, K, alpha, Ab, lda, B, ldb, beta, C + b * ldc, ldc);
    }, 32);
  } else {
    pool->parallel_for(N, [&](int64_t b, int64_t e, int) {
      const float* Bb = tb == Trans::N ? B + b : B + b * ldb;
      fn(ta, tb, M, int(e - b), K, alpha, A, lda, Bb, ldb, beta, C + b, ldc);
    }, 32);
  }
}

}  // namespace covenant

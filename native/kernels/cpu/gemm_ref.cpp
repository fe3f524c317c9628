// The naive GEMM: the oracle every faster path is tested against. Accumulates in double.
#include "covenant/gemm.h"

namespace covenant {

void gemm_ref(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
              int ldb, float beta, float* C, int ldc) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int k = 0; k < K; ++k) {
        float a = ta == Trans::N ? A[(long)i * lda + k] : A[(long)k * lda + i];
        float b = tb == Trans::N ? B[(long)k * ldb + j] : B[(long)j * ldb + k];
        acc += double(a) * double(b);
      }
      float prev = beta == 0.f ? 0.f : beta * C[(long)i * ldc + j];
      C[(long)i * ldc + j] = float(alpha * acc) + prev;
    }
  }
}

}  // namespace covenant

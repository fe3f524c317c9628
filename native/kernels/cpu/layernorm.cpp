// LayerNorm over the last dimension (eps 1e-5), plus the small element-wise and encoder kernels.
#include <cmath>
#include <cstring>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B, int T, int C,
                     ThreadPool* pool) {
  pool->parallel_for((int64_t)B * T, [&](int64_t b0, int64_t e0, int) {
    for (int64_t bt = b0; bt < e0; ++bt) {
      int t = int(bt % T);
      const float* te = wte + (int64_t)inp[bt] * C;
      const float* pe = wpe + (int64_t)t * C;
      float* o = out + bt * C;
      for (int c = 0; c < C; ++c) o[c] = te[c] + pe[c];
    }
  });
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B, int T, int C,
                      ThreadPool* pool) {
  pool->parallel_for(C, [&](int64_t c0, int64_t c1, int) {
    for (int64_t bt = 0; bt < (int64_t)B * T; ++bt) {
      int t = int(bt % T);
      const float* d = dout + bt * C;
      float* te = dwte + (int64_t)inp[bt] * C;
      float* pe = dwpe + (int64_t)t * C;
      for (int64_t c = c0; c < c1; ++c) {
        te[c] += d[c];
        pe[c] += d[c];
      }
    }
  }, 16);
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, ThreadPool* pool) {
  const float eps = 1e-5f;
  pool->parallel_for(N, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = inp + r * C;
      float m = 0.f;
      for (int c = 0; c < C; ++c) m += x[c];
      m /= C;
      float var = 0.f;
      for (int c = 0; c < C; ++c) {
        float d = x[c] - m;
        var += d * d;
      }
      var /= C;
      float s = 1.f / std::sqrt(var + eps);
      float* o = out + r * C;
      for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
      mean[r] = m;
      rstd[r] = s;
    }
  });
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C, ThreadPool* pool) {
  pool->parallel_for(N, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = inp + r * C;
      const float* d = dout + r * C;
      float m = mean[r], s = rstd[r];
      float dnorm_mean = 0.f, dnorm_norm_mean = 0.f;
      for (int c = 0; c < C; ++c) {
        float norm = (x[c] - m) * s;
        float dnorm = weight[c] * d[c];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * norm;
      }
      dnorm_mean /= C;
      dnorm_norm_mean /= C;
      float* di = dinp + r * C;
      for (int c = 0; c < C; ++c) {
        float norm = (x[c] - m) * s;
        float dnorm = weight[c] * d[c];
        di[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
  });
  pool->parallel_for(C, [&](int64_t c0, int64_t c1, int) {
    for (int64_t r = 0; r < N; ++r) {
      const float* x = inp + r * C;
      const float* d = dout + r * C;
      float m = mean[r], s = rstd[r];
      for (int64_t c = c0; c < c1; ++c) {
        dweight[c] += (x[c] - m) * s * d[c];
        dbias[c] += d[c];
      }
    }
  }, 16);
}

void residual_forward(float* out, const float* a, const float* b, size_t n, ThreadPool* pool) {
  pool->parallel_for((int64_t)n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  }, 1024);
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                    GemmBackend gemm_backend, ThreadPool* pool) {
  gemm(gemm_backend, Trans::N, Trans::T, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, OC, pool);
  if (!bias) return;
  pool->parallel_for(N, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = out + r * OC;
      for (int j = 0; j < OC; ++j) o[j] += bias[j];
    }
  });
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, GemmBackend gemm_backend, ThreadPool* pool) {
  if (dinp) gemm(gemm_backend, Trans::N, Trans::N, N, C, OC, 1.f, dout, OC, weight, C, 1.f, dinp, C, pool);
  gemm(gemm_backend, Trans::T, Trans::N, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dweight, C, pool);
  if (!dbias) return;
  pool->parallel_for(OC, [&](int64_t j0, int64_t j1, int) {
    for (int64_t r = 0; r < N; ++r) {
      const float* d = dout + r * OC;
      for (int64_t j = j0; j < j1; ++j) dbias[j] += d[j];
    }
  }, 16);
}

}  // namespace covenant

// AdamW (decoupled weight decay, bias correction) and the global gradient-norm reduction.
#include <cmath>
#include <vector>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

double sum_squares(const float* x, size_t n, ThreadPool* pool) {
  std::vector<double> partial(pool->size(), 0.0);
  pool->parallel_for((int64_t)n, [&](int64_t i0, int64_t i1, int chunk) {
    double s = 0.0;
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]) * x[i];
    partial[chunk] = s;
  }, 4096);
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

void adamw_update(float* params, float* m, float* v, const float* grads, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t, ThreadPool* pool) {
  const float bc1 = 1.f - std::pow(beta1, float(t));
  const float bc2 = 1.f - std::pow(beta2, float(t));
  const float decay = 1.f - lr * weight_decay;
  pool->parallel_for((int64_t)n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      float g = grads[i] * grad_scale;
      float mi = beta1 * m[i] + (1.f - beta1) * g;
      float vi = beta2 * v[i] + (1.f - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      float mhat = mi / bc1, vhat = vi / bc2;
      params[i] = params[i] * decay - lr * mhat / (std::sqrt(vhat) + eps);
    }
  }, 4096);
}

}  // namespace covenant

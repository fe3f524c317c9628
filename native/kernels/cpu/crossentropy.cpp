// Softmax cross-entropy fused with its backward: one pass over each row of logits.
#include <cmath>
#include <vector>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

double crossentropy_forward_backward(float* logits, float* losses, const int32_t* targets, int N, int V,
                                     float dlogits_scale, ThreadPool* pool) {
  pool->parallel_for(N, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      float* x = logits + r * V;
      float maxv = -INFINITY;
      for (int v = 0; v < V; ++v) maxv = x[v] > maxv ? x[v] : maxv;
      double sum = 0.0;
      for (int v = 0; v < V; ++v) sum += std::exp(double(x[v] - maxv));
      double logz = double(maxv) + std::log(sum);
      losses[r] = float(logz - double(x[targets[r]]));
      if (dlogits_scale != 0.f) {
        float inv = float(1.0 / sum);
        for (int v = 0; v < V; ++v) x[v] = std::exp(x[v] - maxv) * inv * dlogits_scale;
        x[targets[r]] -= dlogits_scale;
      }
    }
  });
  double total = 0.0;
  for (int r = 0; r < N; ++r) total += losses[r];
  return total / N;
}

}  // namespace covenant

// GELU with the tanh approximation used by GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#include <cmath>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

namespace {
constexpr float kScale = 0.7978845608028654f;  // sqrt(2/pi)
}

void gelu_forward(float* out, const float* inp, size_t n, ThreadPool* pool) {
  pool->parallel_for((int64_t)n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      float x = inp[i];
      float cube = 0.044715f * x * x * x;
      out[i] = 0.5f * x * (1.f + std::tanh(kScale * (x + cube)));
    }
  }, 1024);
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, ThreadPool* pool) {
  pool->parallel_for((int64_t)n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      float x = inp[i];
      float cube = 0.044715f * x * x * x;
      float arg = kScale * (x + cube);
      float th = std::tanh(arg);
      float sech2 = 1.f - th * th;
      float grad = 0.5f * (1.f + th) + 0.5f * x * sech2 * kScale * (1.f + 3.f * 0.044715f * x * x);
      dinp[i] += grad * dout[i];
    }
  }, 1024);
}

}  // namespace covenant

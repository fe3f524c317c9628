// Causal self-attention, the plain way: materializes the (T,T) scores and probabilities per head.
// It is the reference for the flash kernel and the baseline in the attention bench.
#include <cmath>
#include <cstring>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

size_t attention_naive_scratch_bytes(int B, int T, int NH) { return 2ull * B * NH * T * T * sizeof(float); }

void attention_naive_forward(float* out, float* preatt, float* att, const float* qkv, int B, int T, int C, int NH,
                             ThreadPool* pool) {
  const int C3 = 3 * C, hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    int b = bh / NH, h = bh % NH;
    for (int t = 0; t < T; ++t) {
      const float* q = qkv + ((int64_t)b * T + t) * C3 + h * hs;
      float* pre = preatt + (((int64_t)b * NH + h) * T + t) * T;
      float* a = att + (((int64_t)b * NH + h) * T + t) * T;
      float maxv = -INFINITY;
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* k = qkv + ((int64_t)b * T + t2) * C3 + C + h * hs;
        float s = 0.f;
        for (int i = 0; i < hs; ++i) s += q[i] * k[i];
        s *= scale;
        pre[t2] = s;
        if (s > maxv) maxv = s;
      }
      float sum = 0.f;
      for (int t2 = 0; t2 <= t; ++t2) {
        float e = std::exp(pre[t2] - maxv);
        a[t2] = e;
        sum += e;
      }
      float inv = 1.f / sum;
      for (int t2 = 0; t2 < T; ++t2) a[t2] = t2 <= t ? a[t2] * inv : 0.f;
      for (int t2 = t + 1; t2 < T; ++t2) pre[t2] = 0.f;
      float* o = out + ((int64_t)b * T + t) * C + h * hs;
      for (int i = 0; i < hs; ++i) o[i] = 0.f;
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* v = qkv + ((int64_t)b * T + t2) * C3 + 2 * C + h * hs;
        float w = a[t2];
        for (int i = 0; i < hs; ++i) o[i] += w * v[i];
      }
    }
  });
}

void attention_naive_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                              const float* att, int B, int T, int C, int NH, ThreadPool* pool) {
  const int C3 = 3 * C, hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    int b = bh / NH, h = bh % NH;
    for (int t = 0; t < T; ++t) {
      for (int part = 0; part < 3; ++part)
        std::memset(dqkv + ((int64_t)b * T + t) * C3 + part * C + h * hs, 0, sizeof(float) * hs);
    }
    float* dpre_h = dpreatt + ((int64_t)b * NH + h) * T * T;
    float* datt_h = datt + ((int64_t)b * NH + h) * T * T;
    std::memset(dpre_h, 0, sizeof(float) * T * T);
    std::memset(datt_h, 0, sizeof(float) * T * T);
    for (int t = 0; t < T; ++t) {
      const float* a = att + (((int64_t)b * NH + h) * T + t) * T;
      float* da = datt_h + (int64_t)t * T;
      float* dpre = dpre_h + (int64_t)t * T;
      const float* dout_t = dout + ((int64_t)b * T + t) * C + h * hs;
      // out = att @ v
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* v = qkv + ((int64_t)b * T + t2) * C3 + 2 * C + h * hs;
        float* dv = dqkv + ((int64_t)b * T + t2) * C3 + 2 * C + h * hs;
        for (int i = 0; i < hs; ++i) {
          da[t2] += v[i] * dout_t[i];
          dv[i] += a[t2] * dout_t[i];
        }
      }
      // softmax
      float dot = 0.f;
      for (int t2 = 0; t2 <= t; ++t2) dot += a[t2] * da[t2];
      for (int t2 = 0; t2 <= t; ++t2) dpre[t2] = a[t2] * (da[t2] - dot);
      // preatt = scale * q . k
      const float* q = qkv + ((int64_t)b * T + t) * C3 + h * hs;
      float* dq = dqkv + ((int64_t)b * T + t) * C3 + h * hs;
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* k = qkv + ((int64_t)b * T + t2) * C3 + C + h * hs;
        float* dk = dqkv + ((int64_t)b * T + t2) * C3 + C + h * hs;
        float g = dpre[t2] * scale;
        for (int i = 0; i < hs; ++i) {
          dq[i] += k[i] * g;
          dk[i] += q[i] * g;
        }
      }
    }
  });
}

}  // namespace covenant

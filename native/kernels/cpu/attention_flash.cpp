// Causal self-attention without the (T,T) matrix: each (batch, head) walks query tiles against key
// tiles with an online softmax (running max m and sum l per query row), and keeps only the row's
// log-sum-exp for the backward, which recomputes p = exp(s - lse) tile by tile.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

namespace {
constexpr int kTileQ = 16;  // query rows per tile
constexpr int kTileK = 64;  // keys per tile

inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma GCC ivdep
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
inline void axpy(float* y, float a, const float* x, int n) {
#pragma GCC ivdep
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}
}  // namespace

size_t attention_flash_scratch_bytes(int B, int T, int NH, int hs, int threads) {
  size_t per_thread = (size_t)kTileQ * (hs + kTileK + 2) * sizeof(float);
  return (size_t)B * NH * T * sizeof(float) + per_thread * threads;  // lse + tiles
}

void attention_flash_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                             ThreadPool* pool) {
  const int C3 = 3 * C, hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    int b = bh / NH, h = bh % NH;
    const float* base = qkv + (int64_t)b * T * C3;
    std::vector<float> acc((size_t)kTileQ * hs), m(kTileQ), l(kTileQ), s(kTileK);
    for (int q0 = 0; q0 < T; q0 += kTileQ) {
      int rows = std::min(kTileQ, T - q0);
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.f);
      int kend = q0 + rows;  // causal: no query in this tile sees a key at or past kend
      for (int k0 = 0; k0 < kend; k0 += kTileK) {
        int cols = std::min(kTileK, kend - k0);
        for (int r = 0; r < rows; ++r) {
          int i = q0 + r;
          if (k0 > i) continue;
          int last = std::min(cols, i - k0 + 1);
          const float* q = base + (int64_t)i * C3 + h * hs;
          float bmax = -INFINITY;
          for (int c = 0; c < last; ++c) {
            s[c] = dot(q, base + (int64_t)(k0 + c) * C3 + C + h * hs, hs) * scale;
            bmax = std::max(bmax, s[c]);
          }
          float mnew = std::max(m[r], bmax);
          float corr = std::exp(m[r] - mnew);
          float* a = acc.data() + (size_t)r * hs;
          if (corr != 1.f) {
            for (int d = 0; d < hs; ++d) a[d] *= corr;
          }
          float lsum = l[r] * corr;
          for (int c = 0; c < last; ++c) {
            float p = std::exp(s[c] - mnew);
            lsum += p;
            axpy(a, p, base + (int64_t)(k0 + c) * C3 + 2 * C + h * hs, hs);
          }
          l[r] = lsum;
          m[r] = mnew;
        }
      }
      for (int r = 0; r < rows; ++r) {
        int i = q0 + r;
        float inv = 1.f / l[r];
        float* o = out + ((int64_t)b * T + i) * C + h * hs;
        const float* a = acc.data() + (size_t)r * hs;
        for (int d = 0; d < hs; ++d) o[d] = a[d] * inv;
        lse[((int64_t)b * NH + h) * T + i] = m[r] + std::log(l[r]);
      }
    }
  });
}

void attention_flash_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                              int B, int T, int C, int NH, ThreadPool* pool) {
  const int C3 = 3 * C, hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    int b = bh / NH, h = bh % NH;
    const float* base = qkv + (int64_t)b * T * C3;
    float* dbase = dqkv + (int64_t)b * T * C3;
    const float* lse_bh = lse + ((int64_t)b * NH + h) * T;
    for (int t = 0; t < T; ++t)
      for (int part = 0; part < 3; ++part) std::memset(dbase + (int64_t)t * C3 + part * C + h * hs, 0, sizeof(float) * hs);
    std::vector<float> D(T);
    for (int i = 0; i < T; ++i)
      D[i] = dot(dout + ((int64_t)b * T + i) * C + h * hs, out + ((int64_t)b * T + i) * C + h * hs, hs);
    // Key tiles outer, so a tile's k, v, dk, dv stay in cache while every later query row visits them.
    for (int k0 = 0; k0 < T; k0 += kTileK) {
      int cols = std::min(kTileK, T - k0);
      for (int i = k0; i < T; ++i) {
        const float* q = base + (int64_t)i * C3 + h * hs;
        const float* dO = dout + ((int64_t)b * T + i) * C + h * hs;
        float* dq = dbase + (int64_t)i * C3 + h * hs;
        int last = std::min(cols, i - k0 + 1);
        float li = lse_bh[i], Di = D[i];
        for (int c = 0; c < last; ++c) {
          int j = k0 + c;
          const float* k = base + (int64_t)j * C3 + C + h * hs;
          const float* v = base + (int64_t)j * C3 + 2 * C + h * hs;
          float p = std::exp(dot(q, k, hs) * scale - li);
          axpy(dbase + (int64_t)j * C3 + 2 * C + h * hs, p, dO, hs);  // dv_j += p dO_i
          float ds = p * (dot(dO, v, hs) - Di) * scale;
          axpy(dq, ds, k, hs);
          axpy(dbase + (int64_t)j * C3 + C + h * hs, ds, q, hs);
        }
      }
    }
  });
}

}  // namespace covenant

// Causal self-attention without the (T,T) matrix (FlashAttention-2 style, on the CPU). Per (batch, head):
// K^T and V are packed once into contiguous scratch; query tiles of 32 rows walk key tiles of 64 with an
// online softmax (running max m and sum l per row), and only the row's log-sum-exp is kept for the
// backward. The backward walks key tiles outer and query tiles inner, recomputing P = exp(S - lse) per
// tile. Every tile product is a loop vectorized over its last dimension; the per-head workers are built
// for AVX-512, AVX2 and baseline x86-64 (target_clones) and the best one runs. exp is a polynomial
// (relative error about 2e-7), so that it vectorizes too. The arithmetic order is fixed, so results do
// not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "covenant/kernels.h"
#include "covenant/thread_pool.h"

namespace covenant {

namespace {

constexpr int kTileQ = 32;  // query rows per tile
constexpr int kTileK = 64;  // keys per tile

#define COVENANT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define COVENANT_INLINE inline __attribute__((always_inline))

// exp(x) for x <= 0 (the softmax only needs those): 2^(x log2 e) split into 2^n * 2^f, f in [-0.5, 0.5],
// 2^f by a degree-6 polynomial; inputs below -87 give 0.
COVENANT_INLINE float exp_nonpos(float x) {
  x = std::max(x, -87.0f);
  float t = x * 1.44269504088896341f;
  float n = __builtin_roundf(t);
  float f = t - n;
  float p = 1.5403530393381606e-4f;
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, 4);
  bits += int32_t(n) << 23;
  float r;
  std::memcpy(&r, &bits, 4);
  return x <= -87.0f ? 0.0f : r;
}

// Per-thread scratch, sized for the largest (T, hs) seen.
struct Scratch {
  std::vector<float> kt, vt, k, v, q, dout, s, p, dq, acc, dk, dv;
};

// Copies head h of rows [0, T) at column offset `part` (0 q, C k, 2C v) into dst (T, hs).
COVENANT_INLINE void gather(float* dst, const float* qkv, int T, int C3, int off, int hs) {
  for (int t = 0; t < T; ++t) std::memcpy(dst + (size_t)t * hs, qkv + (size_t)t * C3 + off, sizeof(float) * hs);
}
// Transposed: dst (hs, Tp), Tp = T rounded up to a whole key tile; the padding columns are zero, so tile
// loops can always run kTileK columns with a constant trip count (kept in registers).
COVENANT_INLINE int padded(int T) { return (T + kTileK - 1) / kTileK * kTileK; }
COVENANT_INLINE void gather_t(float* dst, const float* qkv, int T, int C3, int off, int hs) {
  const int Tp = padded(T);
  for (int d = 0; d < hs; ++d) std::fill(dst + (size_t)d * Tp + T, dst + (size_t)(d + 1) * Tp, 0.f);
  for (int t = 0; t < T; ++t) {
    const float* src = qkv + (size_t)t * C3 + off;
    for (int d = 0; d < hs; ++d) dst[(size_t)d * Tp + t] = src[d];
  }
}

template <int HS>
COVENANT_INLINE void flash_forward_head_t(float* out, float* lse, const float* qkv, int T, int C, int hs_rt, int h,
                                          float scale, Scratch& sc) {
  const int hs = HS > 0 ? HS : hs_rt;
  const int C3 = 3 * C;
  const int Tp = padded(T);
  float* kt = sc.kt.data();  // (hs, T)
  float* v = sc.v.data();    // (T, hs)
  gather_t(kt, qkv, T, C3, C + h * hs, hs);
  gather(v, qkv, T, C3, 2 * C + h * hs, hs);
  float* s = sc.s.data();      // (kTileQ, kTileK)
  float* acc = sc.acc.data();  // (kTileQ, hs)
  float* q = sc.q.data();      // (kTileQ, hs), pre-scaled
  float m[kTileQ], l[kTileQ];
  for (int q0 = 0; q0 < T; q0 += kTileQ) {
    const int rows = std::min(kTileQ, T - q0);
    for (int r = 0; r < rows; ++r) {
      const float* src = qkv + (size_t)(q0 + r) * C3 + h * hs;
      for (int d = 0; d < hs; ++d) q[r * hs + d] = src[d] * scale;
      m[r] = -INFINITY;
      l[r] = 0.f;
    }
    std::fill(acc, acc + (size_t)rows * hs, 0.f);
    const int kend = q0 + rows;  // causal: no row of this tile sees a key at or past kend
    for (int k0 = 0; k0 < kend; k0 += kTileK) {
      const int cols = std::min(kTileK, kend - k0);
      // S = Q K^T for the tile, vectorized over keys; a row of S stays in registers.
      for (int r = 0; r < rows; ++r) {
        float srow[kTileK] = {};
        for (int d = 0; d < hs; ++d) {
          const float qd = q[r * hs + d];
          const float* kr = kt + (size_t)d * Tp + k0;
          for (int c = 0; c < kTileK; ++c) srow[c] += qd * kr[c];
        }
        std::memcpy(s + r * kTileK, srow, sizeof(srow));
      }
      for (int r = 0; r < rows; ++r) {
        const int valid = std::min(cols, q0 + r - k0 + 1);
        float* sr = s + r * kTileK;
        if (valid <= 0) {
          for (int c = 0; c < cols; ++c) sr[c] = 0.f;
          continue;
        }
        float bmax = sr[0];
        for (int c = 1; c < valid; ++c) bmax = std::max(bmax, sr[c]);
        const float mnew = std::max(m[r], bmax);
        const float corr = exp_nonpos(m[r] - mnew);
        float sum = 0.f;
        for (int c = 0; c < valid; ++c) {
          sr[c] = exp_nonpos(sr[c] - mnew);
          sum += sr[c];
        }
        for (int c = valid; c < cols; ++c) sr[c] = 0.f;
        l[r] = l[r] * corr + sum;
        m[r] = mnew;
        float* ar = acc + (size_t)r * hs;
        for (int d = 0; d < hs; ++d) ar[d] *= corr;
      }
      // acc += P V, vectorized over the head dimension (a row of acc in registers when hs is fixed).
      for (int r = 0; r < rows; ++r) {
        float* ar = acc + (size_t)r * hs;
        const float* pr = s + r * kTileK;
        if constexpr (HS > 0) {
          float a[HS];
          std::memcpy(a, ar, sizeof(a));
          for (int c = 0; c < cols; ++c) {
            const float pc = pr[c];
            const float* vr = v + (size_t)(k0 + c) * HS;
            for (int d = 0; d < HS; ++d) a[d] += pc * vr[d];
          }
          std::memcpy(ar, a, sizeof(a));
        } else {
          for (int c = 0; c < cols; ++c) {
            const float pc = pr[c];
            const float* vr = v + (size_t)(k0 + c) * hs;
            for (int d = 0; d < hs; ++d) ar[d] += pc * vr[d];
          }
        }
      }
    }
    for (int r = 0; r < rows; ++r) {
      const float inv = 1.f / l[r];
      float* o = out + (size_t)(q0 + r) * C + h * hs;
      for (int d = 0; d < hs; ++d) o[d] = acc[(size_t)r * hs + d] * inv;
      lse[q0 + r] = m[r] + std::log(l[r]);
    }
  }
}

COVENANT_CLONES void flash_forward_head(float* out, float* lse, const float* qkv, int T, int C, int hs, int h,
                                        float scale, Scratch& sc) {
  if (hs == 64) flash_forward_head_t<64>(out, lse, qkv, T, C, hs, h, scale, sc);
  else if (hs == 128) flash_forward_head_t<128>(out, lse, qkv, T, C, hs, h, scale, sc);
  else flash_forward_head_t<0>(out, lse, qkv, T, C, hs, h, scale, sc);
}

template <int HS>
COVENANT_INLINE void flash_backward_head_t(float* dqkv, const float* dout, const float* qkv, const float* out,
                                           const float* lse, int T, int C, int hs_rt, int h, float scale, Scratch& sc) {
  const int hs = HS > 0 ? HS : hs_rt;
  const int C3 = 3 * C;
  const int Tp = padded(T);
  float* q = sc.q.data();      // (T, hs)
  float* k = sc.k.data();      // (T, hs)
  float* kt = sc.kt.data();    // (hs, T)
  float* vt = sc.vt.data();    // (hs, T)
  float* dO = sc.dout.data();  // (T, hs)
  float* dq = sc.dq.data();    // (T, hs)
  gather(q, qkv, T, C3, h * hs, hs);
  gather(k, qkv, T, C3, C + h * hs, hs);
  gather_t(kt, qkv, T, C3, C + h * hs, hs);
  gather_t(vt, qkv, T, C3, 2 * C + h * hs, hs);
  for (int t = 0; t < T; ++t) std::memcpy(dO + (size_t)t * hs, dout + (size_t)t * C + h * hs, sizeof(float) * hs);
  std::fill(dq, dq + (size_t)T * hs, 0.f);
  std::vector<float>& Dv = sc.acc;  // D_i = dO_i . O_i
  for (int t = 0; t < T; ++t) {
    const float* o = out + (size_t)t * C + h * hs;
    float sum = 0.f;
    for (int d = 0; d < hs; ++d) sum += dO[(size_t)t * hs + d] * o[d];
    Dv[t] = sum;
  }
  float* p = sc.p.data();    // (kTileQ, kTileK)
  float* ds = sc.s.data();   // (kTileQ, kTileK)
  float* dk = sc.dk.data();  // (kTileK, hs)
  float* dv = sc.dv.data();  // (kTileK, hs)
  for (int k0 = 0; k0 < T; k0 += kTileK) {
    const int cols = std::min(kTileK, T - k0);
    std::fill(dk, dk + (size_t)cols * hs, 0.f);
    std::fill(dv, dv + (size_t)cols * hs, 0.f);
    for (int q0 = (k0 / kTileQ) * kTileQ; q0 < T; q0 += kTileQ) {
      const int rows = std::min(kTileQ, T - q0);
      // P = exp(scale * Q K^T - lse), masked; dP = dO V^T; dS = P (dP - D) scale.
      for (int r = 0; r < rows; ++r) {
        const int i = q0 + r;
        const int valid = std::max(0, std::min(cols, i - k0 + 1));
        float* pr = p + r * kTileK;
        float* dr = ds + r * kTileK;
        if (valid == 0) {
          for (int c = 0; c < kTileK; ++c) pr[c] = dr[c] = 0.f;
          continue;
        }
        float prow[kTileK] = {}, drow[kTileK] = {};
        for (int d = 0; d < hs; ++d) {
          const float qd = q[(size_t)i * hs + d], od = dO[(size_t)i * hs + d];
          const float* kr = kt + (size_t)d * Tp + k0;
          const float* vr = vt + (size_t)d * Tp + k0;
          for (int c = 0; c < kTileK; ++c) {
            prow[c] += qd * kr[c];
            drow[c] += od * vr[c];
          }
        }
        const float li = lse[i], Di = Dv[i];
        for (int c = 0; c < kTileK; ++c) {
          const float pc = c < valid ? exp_nonpos(prow[c] * scale - li) : 0.f;
          pr[c] = pc;
          dr[c] = pc * (drow[c] - Di) * scale;
        }
      }
      // dV += P^T dO; dK += dS^T Q; dQ += dS K — each vectorized over the head dimension.
      for (int r = 0; r < rows; ++r) {
        const int i = q0 + r;
        const float* pr = p + r * kTileK;
        const float* dr = ds + r * kTileK;
        const float* dOi = dO + (size_t)i * hs;
        const float* qi = q + (size_t)i * hs;
        float* dqi = dq + (size_t)i * hs;
        const int valid = std::max(0, std::min(cols, i - k0 + 1));
        if constexpr (HS > 0) {
          float g[HS];
          std::memcpy(g, dqi, sizeof(g));
          for (int c = 0; c < valid; ++c) {
            const float pc = pr[c], dc = dr[c];
            float* dvc = dv + (size_t)c * HS;
            float* dkc = dk + (size_t)c * HS;
            const float* kc = k + (size_t)(k0 + c) * HS;
            for (int d = 0; d < HS; ++d) {
              dvc[d] += pc * dOi[d];
              dkc[d] += dc * qi[d];
              g[d] += dc * kc[d];
            }
          }
          std::memcpy(dqi, g, sizeof(g));
        } else {
          for (int c = 0; c < valid; ++c) {
            const float pc = pr[c], dc = dr[c];
            float* dvc = dv + (size_t)c * hs;
            float* dkc = dk + (size_t)c * hs;
            const float* kc = k + (size_t)(k0 + c) * hs;
            for (int d = 0; d < hs; ++d) {
              dvc[d] += pc * dOi[d];
              dkc[d] += dc * qi[d];
              dqi[d] += dc * kc[d];
            }
          }
        }
      }
    }
    for (int c = 0; c < cols; ++c) {
      std::memcpy(dqkv + (size_t)(k0 + c) * C3 + C + h * hs, dk + (size_t)c * hs, sizeof(float) * hs);
      std::memcpy(dqkv + (size_t)(k0 + c) * C3 + 2 * C + h * hs, dv + (size_t)c * hs, sizeof(float) * hs);
    }
  }
  for (int t = 0; t < T; ++t) std::memcpy(dqkv + (size_t)t * C3 + h * hs, dq + (size_t)t * hs, sizeof(float) * hs);
}

COVENANT_CLONES void flash_backward_head(float* dqkv, const float* dout, const float* qkv, const float* out,
                                         const float* lse, int T, int C, int hs, int h, float scale, Scratch& sc) {
  if (hs == 64) flash_backward_head_t<64>(dqkv, dout, qkv, out, lse, T, C, hs, h, scale, sc);
  else if (hs == 128) flash_backward_head_t<128>(dqkv, dout, qkv, out, lse, T, C, hs, h, scale, sc);
  else flash_backward_head_t<0>(dqkv, dout, qkv, out, lse, T, C, hs, h, scale, sc);
}

Scratch& thread_scratch(int T, int hs) {
  thread_local Scratch sc;
  const size_t th = (size_t)padded(T) * hs;
  auto fit = [](std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  };
  for (auto* v : {&sc.kt, &sc.vt, &sc.k, &sc.v, &sc.q, &sc.dout, &sc.dq}) fit(*v, th);
  fit(sc.q, std::max(th, (size_t)kTileQ * hs));
  fit(sc.acc, std::max((size_t)T, (size_t)kTileQ * hs));
  fit(sc.s, (size_t)kTileQ * kTileK);
  fit(sc.p, (size_t)kTileQ * kTileK);
  fit(sc.dk, (size_t)kTileK * hs);
  fit(sc.dv, (size_t)kTileK * hs);
  return sc;
}

}  // namespace

size_t attention_flash_scratch_bytes(int B, int T, int NH, int hs, int threads) {
  // lse, plus per thread: the packed head (q, k, k^T, v^T, dout, dq: 6 x T x hs) and the tiles.
  size_t per_thread = (6 * (size_t)T * hs + 2 * (size_t)kTileQ * kTileK + 2 * (size_t)kTileK * hs +
                       std::max((size_t)T, (size_t)kTileQ * hs)) * sizeof(float);
  return (size_t)B * NH * T * sizeof(float) + per_thread * threads;
}

void attention_flash_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                             ThreadPool* pool) {
  const int hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    const int b = bh / NH, h = bh % NH;
    flash_forward_head(out + (size_t)b * T * C, lse + ((size_t)b * NH + h) * T, qkv + (size_t)b * T * 3 * C, T, C, hs, h,
                       scale, thread_scratch(T, hs));
  });
}

void attention_flash_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                              int B, int T, int C, int NH, ThreadPool* pool) {
  const int hs = C / NH;
  const float scale = 1.f / std::sqrt(float(hs));
  pool->run(B * NH, [&](int bh) {
    const int b = bh / NH, h = bh % NH;
    flash_backward_head(dqkv + (size_t)b * T * 3 * C, dout + (size_t)b * T * C, qkv + (size_t)b * T * 3 * C,
                        out + (size_t)b * T * C, lse + ((size_t)b * NH + h) * T, T, C, hs, h, scale,
                        thread_scratch(T, hs));
  });
}

}  // namespace covenant

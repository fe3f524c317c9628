// Our portable GEMM: BLIS-style blocking (NC columns of B packed per KC slice, MC rows of A packed per
// slice) around a register-tiled micro-kernel. The micro-kernel is chosen once per process from what
// the CPU supports: AVX-512 (12x32 tile), AVX2+FMA (6x16) or portable C (4x16). Packed panels are
// zero-padded, so edge tiles run the same kernel and store only their valid part.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "covenant/gemm.h"

namespace covenant {

namespace {

constexpr int KC = 256;
constexpr int MC = 96;    // multiple of every MR below
constexpr int NC = 2048;  // multiple of every NR below

using MicroKernel = void (*)(int kc, const float* a, const float* b, float* c, long ldc, float alpha, int mr, int nr);

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
float* scratch(std::unique_ptr<float, AlignedFree>& buf, size_t& cap, size_t n) {
  if (cap < n) {
    buf.reset(static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64)));
    cap = n;
  }
  return buf.get();
}

// Writes an accumulated tile (mr x nr valid of an MR x NR tile) into C: C += alpha * tile.
template <int MR, int NR>
inline void store_partial(const float* tile, float* c, long ldc, float alpha, int mr, int nr) {
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[r * ldc + j] += alpha * tile[r * NR + j];
}

__attribute__((target("avx512f,fma"))) void kernel_avx512(int kc, const float* a, const float* b, float* c,
                                                          long ldc, float alpha, int mr, int nr) {
  constexpr int MR = 12, NR = 32;
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      __m512 ar = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
    }
    a += MR;
    b += NR;
  }
  __m512 va = _mm512_set1_ps(alpha);
  if (mr == MR && nr == NR) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      _mm512_storeu_ps(cr, _mm512_fmadd_ps(va, acc[r][0], _mm512_loadu_ps(cr)));
      _mm512_storeu_ps(cr + 16, _mm512_fmadd_ps(va, acc[r][1], _mm512_loadu_ps(cr + 16)));
    }
    return;
  }
  alignas(64) float tile[MR * NR];
  for (int r = 0; r < MR; ++r) {
    _mm512_store_ps(tile + r * NR, acc[r][0]);
    _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
  }
  store_partial<MR, NR>(tile, c, ldc, alpha, mr, nr);
}

__attribute__((target("avx2,fma"))) void kernel_avx2(int kc, const float* a, const float* b, float* c, long ldc,
                                                     float alpha, int mr, int nr) {
  constexpr int MR = 6, NR = 16;
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      __m256 ar = _mm256_broadcast_ss(a + r);
      acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
    }
    a += MR;
    b += NR;
  }
  __m256 va = _mm256_set1_ps(alpha);
  if (mr == MR && nr == NR) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      _mm256_storeu_ps(cr, _mm256_fmadd_ps(va, acc[r][0], _mm256_loadu_ps(cr)));
      _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(va, acc[r][1], _mm256_loadu_ps(cr + 8)));
    }
    return;
  }
  alignas(64) float tile[MR * NR];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tile + r * NR, acc[r][0]);
    _mm256_store_ps(tile + r * NR + 8, acc[r][1]);
  }
  store_partial<MR, NR>(tile, c, ldc, alpha, mr, nr);
}

void kernel_portable(int kc, const float* a, const float* b, float* c, long ldc, float alpha, int mr, int nr) {
  constexpr int MR = 4, NR = 16;
  alignas(64) float tile[MR * NR] = {};
  for (int k = 0; k < kc; ++k) {
    for (int r = 0; r < MR; ++r) {
      float ar = a[r];
      for (int j = 0; j < NR; ++j) tile[r * NR + j] += ar * b[j];
    }
    a += MR;
    b += NR;
  }
  store_partial<MR, NR>(tile, c, ldc, alpha, mr, nr);
}

struct Isa {
  const char* name;
  int mr, nr;
  MicroKernel kernel;
};

const Isa& isa() {
  static const Isa chosen = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa{"avx512", 12, 32, kernel_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa{"avx2", 6, 16, kernel_avx2};
    return Isa{"portable", 4, 16, kernel_portable};
  }();
  return chosen;
}

// dst: ceil(mc/MR) panels, each kc x MR (row r of the panel at dst[k*MR + r]); rows past mc are zero.
void pack_a(Trans ta, const float* A, long lda, int i0, int mc, int k0, int kc, int MR, float* dst) {
  for (int p = 0; p < mc; p += MR) {
    float* panel = dst + (long)p * kc;
    int rows = std::min(MR, mc - p);
    for (int r = 0; r < MR; ++r) {
      if (r >= rows) {
        for (int k = 0; k < kc; ++k) panel[k * MR + r] = 0.f;
        continue;
      }
      long i = i0 + p + r;
      if (ta == Trans::N) {
        const float* src = A + i * lda + k0;
        for (int k = 0; k < kc; ++k) panel[k * MR + r] = src[k];
      } else {
        const float* src = A + (long)k0 * lda + i;
        for (int k = 0; k < kc; ++k) panel[k * MR + r] = src[k * lda];
      }
    }
  }
}

// dst: ceil(nc/NR) panels, each kc x NR (column j of the panel at dst[k*NR + j]); columns past nc are zero.
void pack_b(Trans tb, const float* B, long ldb, int k0, int kc, int j0, int nc, int NR, float* dst) {
  for (int p = 0; p < nc; p += NR) {
    float* panel = dst + (long)p * kc;
    int cols = std::min(NR, nc - p);
    if (tb == Trans::N) {
      for (int k = 0; k < kc; ++k) {
        const float* src = B + (long)(k0 + k) * ldb + j0 + p;
        float* out = panel + k * NR;
        int j = 0;
        for (; j < cols; ++j) out[j] = src[j];
        for (; j < NR; ++j) out[j] = 0.f;
      }
    } else {
      for (int j = 0; j < NR; ++j) {
        if (j >= cols) {
          for (int k = 0; k < kc; ++k) panel[k * NR + j] = 0.f;
          continue;
        }
        const float* src = B + (long)(j0 + p + j) * ldb + k0;
        for (int k = 0; k < kc; ++k) panel[k * NR + j] = src[k];
      }
    }
  }
}

}  // namespace

const char* gemm_packed_isa() { return isa().name; }

void gemm_packed_serial(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                        const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (beta != 1.f) {
    for (int i = 0; i < M; ++i) {
      float* row = C + (long)i * ldc;
      if (beta == 0.f) std::memset(row, 0, sizeof(float) * N);
      else for (int j = 0; j < N; ++j) row[j] *= beta;
    }
  }
  if (K <= 0 || alpha == 0.f) return;
  const Isa& k = isa();
  thread_local std::unique_ptr<float, AlignedFree> abuf, bbuf;
  thread_local size_t acap = 0, bcap = 0;
  int ncmax = std::min(NC, ((N + k.nr - 1) / k.nr) * k.nr);
  float* Bp = scratch(bbuf, bcap, (size_t)KC * ncmax);
  float* Ap = scratch(abuf, acap, (size_t)KC * MC);
  for (int jc = 0; jc < N; jc += NC) {
    int nc = std::min(NC, N - jc);
    for (int pc = 0; pc < K; pc += KC) {
      int kc = std::min(KC, K - pc);
      pack_b(tb, B, ldb, pc, kc, jc, nc, k.nr, Bp);
      for (int ic = 0; ic < M; ic += MC) {
        int mc = std::min(MC, M - ic);
        pack_a(ta, A, lda, ic, mc, pc, kc, k.mr, Ap);
        for (int jr = 0; jr < nc; jr += k.nr) {
          for (int ir = 0; ir < mc; ir += k.mr) {
            k.kernel(kc, Ap + (long)ir * kc, Bp + (long)jr * kc, C + (long)(ic + ir) * ldc + jc + jr, ldc, alpha,
                     std::min(k.mr, mc - ir), std::min(k.nr, nc - jr));
          }
        }
      }
    }
  }
}

}  // namespace covenant

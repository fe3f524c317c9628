// Flash attention (FlashAttention-2 style) on a CUDA device: bf16 inputs and outputs, fp32 accumulation on
// tensor cores (mma.sync m16n8k16 bf16, sm_80 and later), online softmax, causal or not, head size 64 or 128
// (template parameter), any T (partial tiles are masked). Oracle: attention_flash_forward / _backward in
// native/kernels/cpu/attention_flash.cpp (causal, fp32); the GPU suite also checks the non-causal case
// against an fp64 host reference.
//
// Layout (the engine's, see include/covenant/cuda_kernels.h): qkv (B,T,3C) bf16 with q, k, v at column
// offsets 0, C, 2C, head h at h*hs within each; out, dout (B,T,C) bf16; lse, delta (B,NH,T) fp32; dqkv
// (B,T,3C) bf16, OVERWRITTEN. Scores are s = q.k * scale, scale = 1/sqrt(hs); the kernels work in the log2
// domain (s * log2(e), exp2f) and store lse in natural log.
//
// Work split (4 warps = 128 threads per block, every block on one (batch, head) = blockIdx.y):
//   forward     - a block owns 64 query rows, a warp 16 of them; the warp keeps its Q fragments and its O
//                 accumulator in registers, and walks 64-key tiles of K and V staged in shared memory:
//                 S = Q K^T, online softmax (running max m, running sum l), O += P V. Causal blocks stop at
//                 their last row's diagonal, and are launched heaviest first. Staging (template parameter
//                 PIPE, chosen by attention_pipeline()): by default cp.async into two buffers each of K and V,
//                 tile j+1's copies issued before tile j is computed, so their latency hides behind it; or
//                 (the first version) plain 16-byte loads and stores into one buffer each, between two
//                 barriers, with nothing in flight while a tile is computed. The same tiles either way, so the
//                 same results bit for bit.
//   backward    - two kernels, no atomics (deterministic):
//     dq pass   - like the forward (64 query rows per block; 64-key tiles, or 32 when hs = 128 to stay within
//                 registers): D = rowsum(dO * O) for its rows (written to delta), then per key tile
//                 P = exp(S - lse), dP = dO V^T, dS = P (dP - D), dQ += dS K. dq = scale * dQ.
//     dk/dv pass- a block owns 64 keys, a warp 16 of them; per 32-row query tile (Q, dO, lse, delta staged in
//                 shared memory): S^T = K Q^T, P^T, dP^T = V dO^T, dS^T = P^T (dP^T - D); dV += P^T dO,
//                 dK += dS^T Q. dk = scale * dK. Causal blocks start at the first query tile that sees them.
//     Both stage their streamed tiles (dq: K and V; dk/dv: Q, dO, lse and delta) the forward's two ways, by the
//     same PIPE switch: two buffers of each filled by cp.async a tile ahead, or plain loads and stores into one.
// P and dS are rounded to bf16 for their products (as FlashAttention does); every sum is fp32.
//
// Fragments follow the PTX ISA layout of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16, row-major) a0: (g, 2t..2t+1) a1: (g+8, 2t..) a2: (g, 2t+8..) a3: (g+8, 2t+8..)
//   B (16x8, k x n)      b0: (k = 2t..2t+1, n = g)  b1: (k = 2t+8..2t+9, n = g)
//   C (16x8, f32)        c0,c1: (g, 2t..2t+1)  c2,c3: (g+8, 2t..2t+1)
// the lower-indexed element of each pair in the low 16 bits. A score accumulator (C layout) is reused as the
// A operand of the next product by packing pairs (c0,c1), (c2,c3) of two adjacent n-tiles. Shared tiles are
// row-major with rows padded by 8 bf16 (16 bytes), which makes every fragment load below bank-conflict free;
// B operands whose k runs along a tile's rows (V in P V, K in dS K, Q and dO in the dk/dv products) come from
// load_b_rows_k: one ldmatrix.x2.trans per fragment (the default), or two 16-bit loads per register (the first
// version); the kernels' LDSM template parameter picks it, the launchers pick that from attention_ldmatrix()
// (include/covenant/cuda_kernels.h: COVENANT_ATTENTION_LDMATRIX, or set_attention_ldmatrix). Both give the same
// fragments, bit for bit.
#include <cuda_bf16.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.cuh"
#include "covenant/cuda_kernels.h"

namespace covenant {
namespace cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockRows = 16 * kWarps;  // query rows per forward / dq block, keys per dk/dv block
constexpr int kDkdvQueryTile = 32;       // query rows per step of the dk/dv pass
constexpr int kForwardKeyTile = 64;      // keys per tile of the forward
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- fragments ----

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t ld32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint32_t pack_bits(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }
__device__ __forceinline__ uint32_t pack_f32(float lo, float hi) {
  return pack_bits(__bfloat16_as_ushort(__float2bfloat16_rn(lo)), __bfloat16_as_ushort(__float2bfloat16_rn(hi)));
}
// Sum of the products of the two bf16 pairs a and b, in fp32.
__device__ __forceinline__ float dot_pair(uint32_t a, uint32_t b) {
  return __uint_as_float(a << 16) * __uint_as_float(b << 16) +
         __uint_as_float(a & 0xffff0000u) * __uint_as_float(b & 0xffff0000u);
}

// A fragments of rows ra = row0 + g and rb = ra + 8 of a global row-major bf16 matrix (rows of `ld`, HS
// columns used), for every 16-column chunk; rows at or past T read as zero.
template <int HS>
__device__ __forceinline__ void load_a_rows_global(uint32_t (&f)[HS / 16][4], const uint16_t* src, size_t ld, int ra,
                                                   int rb, int T, int t) {
#pragma unroll
  for (int kc = 0; kc < HS / 16; ++kc) {
    const int c = kc * 16 + 2 * t;
    f[kc][0] = ra < T ? ld32(src + size_t(ra) * ld + c) : 0u;
    f[kc][1] = rb < T ? ld32(src + size_t(rb) * ld + c) : 0u;
    f[kc][2] = ra < T ? ld32(src + size_t(ra) * ld + c + 8) : 0u;
    f[kc][3] = rb < T ? ld32(src + size_t(rb) * ld + c + 8) : 0u;
  }
}

// A fragment (16 rows from m0, 16 columns from k0) of a shared row-major tile with row stride S.
__device__ __forceinline__ void load_a_smem(uint32_t (&a)[4], const uint16_t* s, int S, int m0, int k0, int g,
                                            int t) {
  const uint16_t* p = s + (m0 + g) * S + k0 + 2 * t;
  a[0] = ld32(p);
  a[1] = ld32(p + 8 * S);
  a[2] = ld32(p + 8);
  a[3] = ld32(p + 8 * S + 8);
}

// B fragment (k0..k0+15, n0..n0+7) where B[k][n] = tile[n][k] (the tile's rows are B's columns: K in Q K^T).
__device__ __forceinline__ void load_b_rows_n(uint32_t& b0, uint32_t& b1, const uint16_t* s, int S, int n0, int k0,
                                              int g, int t) {
  const uint16_t* p = s + (n0 + g) * S + k0 + 2 * t;
  b0 = ld32(p);
  b1 = ld32(p + 8);
}

// B fragment (k0..k0+15, n0..n0+7) where B[k][n] = tile[k][n] (the tile's rows are B's rows: V in P V).
// LDSM: one ldmatrix.m8n8.x2.trans. Its matrix 0 is tile rows k0..k0+7, matrix 1 rows k0+8..k0+15, columns
// n0..n0+7 of both; lane 8j + r supplies the address of row r of matrix j, so lane (g, t) gives row
// k0 + (lane & 15) = k0 + 4 (g & 3) + t (lanes 16-31 repeat 0-15; .x2 ignores them). .trans hands lane (g, t)
// column g of rows 2t, 2t + 1 of each matrix, lower row in the low half: b0 and b1 exactly as the gathers below.
// Every row address is 16-byte aligned (tile bases are, S * 2 = 144 or 272 bytes, n0 a multiple of 8); the 8 rows
// of a matrix fall in distinct banks (consecutive rows start 4 banks apart: S * 2 bytes = 36 or 68 words); only
// columns < HS are read. Otherwise (!LDSM) two 16-bit loads per register.
template <bool LDSM>
__device__ __forceinline__ void load_b_rows_k(uint32_t& b0, uint32_t& b1, const uint16_t* s, int S, int k0, int n0,
                                              int g, int t) {
  if constexpr (LDSM) {
    const uint32_t row = static_cast<uint32_t>(__cvta_generic_to_shared(s + (k0 + ((g & 3) << 2) + t) * S + n0));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(row));
  } else {
    const uint16_t* p = s + (k0 + 2 * t) * S + n0 + g;
    b0 = pack_bits(p[0], p[S]);
    b1 = pack_bits(p[8 * S], p[9 * S]);
  }
}

// The A fragment for 16-column chunk kc of a 16 x (8 * NT) accumulator (C layout), rounded to bf16.
template <int NT>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&acc)[NT][4], int kc) {
  a[0] = pack_f32(acc[2 * kc][0], acc[2 * kc][1]);
  a[1] = pack_f32(acc[2 * kc][2], acc[2 * kc][3]);
  a[2] = pack_f32(acc[2 * kc + 1][0], acc[2 * kc + 1][1]);
  a[3] = pack_f32(acc[2 * kc + 1][2], acc[2 * kc + 1][3]);
}

template <int N>
__device__ __forceinline__ void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
}

// Sum over the 4 threads of a quad (the threads that share a row of a C fragment).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return v;
}

// ---- asynchronous copies (sm_80 and later) ----

// One 16-byte cp.async.cg (global -> shared, L1 bypassed) of dst <- src, asynchronous to the issuing thread.
// src_bytes 16 copies; src_bytes 0 reads nothing and writes 16 zero bytes (the zero-fill form; src must still be
// a valid address). Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async16(uint16_t* dst, const uint16_t* src, int src_bytes) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(__cvta_generic_to_global(src)),
               "r"(src_bytes)
               : "memory");
}
// One 4-byte cp.async.ca (global -> shared) of dst <- src; src_bytes 4 copies, 0 writes zero (src still valid).
__device__ __forceinline__ void cp_async4(float* dst, const float* src, int src_bytes) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(__cvta_generic_to_global(src)),
               "r"(src_bytes)
               : "memory");
}
// Closes this thread's group of the copies it issued since its last commit (an empty group if none).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are pending: every older group has landed. Other
// threads see the data only after a barrier that follows the wait.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Copies rows [r0, r0 + R) (HS bf16 each, rows of `ld` in src) into the shared tile s (R, HS + 8) in 16-byte
// chunks, chunk idx to thread idx % kThreads; rows at or past T become zero (a masked probability times a zero
// is 0, never NaN). !ASYNC: plain loads and stores, done when this returns (visible to the other threads after a
// barrier). ASYNC: cp.async copies issued and not waited for (see cp_async_wait); a row at or past T is a
// zero-fill copy (src_bytes 0) that names row T - 1 (T >= 1), so no address out of bounds is ever given.
template <int HS, int R, bool ASYNC = false>
__device__ __forceinline__ void stage_rows(uint16_t* s, const uint16_t* src, size_t ld, int r0, int T) {
  constexpr int kChunks = HS / 8;
  constexpr int S = HS + 8;
  for (int idx = threadIdx.x; idx < R * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool in = r0 + r < T;
    if constexpr (ASYNC) {
      cp_async16(s + r * S + c, src + size_t(in ? r0 + r : T - 1) * ld + c, in ? 16 : 0);
    } else {
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (in) v = *reinterpret_cast<const uint4*>(src + size_t(r0 + r) * ld + c);
      *reinterpret_cast<uint4*>(s + r * S + c) = v;
    }
  }
}

// Copies v[r0, r0 + R) (fp32) into s[0, R), element i to thread i % kThreads; elements at or past T become 0.
// !ASYNC: plain loads and stores; ASYNC: 4-byte cp.async copies, a zero-fill one naming v[T - 1] past T.
template <int R, bool ASYNC = false>
__device__ __forceinline__ void stage_floats(float* s, const float* v, int r0, int T) {
  for (int i = threadIdx.x; i < R; i += kThreads) {
    const bool in = r0 + i < T;
    if constexpr (ASYNC) cp_async4(s + i, v + (in ? r0 + i : T - 1), in ? 4 : 0);
    else s[i] = in ? v[r0 + i] : 0.f;
  }
}

// The staging of key tile [k0, k0 + BK) of K and V in the forward and the dq pass, with the tile's two barriers.
// !PIPE: plain loads and stores into sK0 / sV0. PIPE: the tile's own copies were issued a tile earlier (or before
// the loop, tile 0); this issues the next tile's into the other buffer (offset nxt), then waits for this one's.
template <int HS, int BK, bool PIPE>
__device__ __forceinline__ void stage_kv_tile(uint16_t* sK0, uint16_t* sV0, int nxt, const uint16_t* k_src,
                                              const uint16_t* v_src, size_t ld, int k0, int kend, int T) {
  // Every warp is done with the previous tile: its buffer (PIPE: the one the next tile's copies refill) is free.
  __syncthreads();
  if constexpr (PIPE) {
    if (k0 + BK < kend) {
      stage_rows<HS, BK, true>(sK0 + nxt, k_src, ld, k0 + BK, T);
      stage_rows<HS, BK, true>(sV0 + nxt, v_src, ld, k0 + BK, T);
    }
    cp_async_commit();   // the next tile's group (empty on the last tile)
    cp_async_wait<1>();  // only that group may still be pending: this thread's copies of this tile have landed
  } else {
    stage_rows<HS, BK>(sK0, k_src, ld, k0, T);
    stage_rows<HS, BK>(sV0, v_src, ld, k0, T);
  }
  __syncthreads();  // the tile, from every thread's copies, is visible to every warp
}

// ---- forward ----

// Dynamic shared memory of the forward: K and V tiles (kForwardKeyTile, HS + 8) bf16, two of each when PIPE
// (the plain staging's one of each were static shared arrays in the first version; the same bytes).
// hs 128 pipelined: 68 KiB, above the 48 KiB a launch gets without cudaFuncSetAttribute.
template <int HS, bool PIPE>
constexpr size_t forward_smem_bytes() {
  return (PIPE ? 4 : 2) * size_t(kForwardKeyTile) * (HS + 8) * sizeof(uint16_t);
}

// out (B,T,C) bf16, lse (B,NH,T) fp32 (OVERWRITE) from qkv (B,T,3C). grid (ceil(T/64), B*NH), dynamic shared
// memory forward_smem_bytes<HS, PIPE>().
template <int HS, bool CAUSAL, bool LDSM, bool PIPE>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(uint16_t* __restrict__ out,
                                                                     float* __restrict__ lse,
                                                                     const uint16_t* __restrict__ qkv, int T, int C,
                                                                     int NH, float scale_log2) {
  constexpr int BK = kForwardKeyTile;
  constexpr int S = HS + 8;
  constexpr int NK = BK / 8;  // score n-tiles
  constexpr int NO = HS / 8;  // output n-tiles
  constexpr int kBuffers = PIPE ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* const sK0 = reinterpret_cast<uint16_t*>(smem);  // kBuffers K tiles (BK, S), then as many V tiles
  uint16_t* const sV0 = sK0 + kBuffers * BK * S;

  const int qtile = CAUSAL ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t ld = 3 * size_t(C);
  const uint16_t* q_src = qkv + size_t(b) * T * ld + size_t(h) * HS;
  const uint16_t* k_src = q_src + C;
  const uint16_t* v_src = q_src + 2 * size_t(C);
  const int q0 = qtile * kBlockRows;
  const int ra = q0 + warp * 16 + g, rb = ra + 8;  // this thread's two rows
  const int kend = CAUSAL ? min(T, q0 + kBlockRows) : T;

  // PIPE: tile 0's copies go out first (buffer 0), in flight while Q is read.
  if constexpr (PIPE) {
    stage_rows<HS, BK, true>(sK0, k_src, ld, 0, T);
    stage_rows<HS, BK, true>(sV0, v_src, ld, 0, T);
    cp_async_commit();
  }
  uint32_t qf[HS / 16][4];
  load_a_rows_global<HS>(qf, q_src, ld, ra, rb, T, t);
  float o[NO][4];
  zero(o);
  float ma = -INFINITY, mb = -INFINITY;  // running max (log2 domain), rows ra and rb
  float la = 0.f, lb = 0.f;              // this thread's part of the running sums

  // PIPE: tile i is in buffer i % 2; cur is this tile's offset in sK0 / sV0, nxt the other buffer's.
  int cur = 0, nxt = PIPE ? BK * S : 0;
  for (int k0 = 0; k0 < kend; k0 += BK) {
    stage_kv_tile<HS, BK, PIPE>(sK0, sV0, nxt, k_src, v_src, ld, k0, kend, T);
    const uint16_t* const sK = sK0 + cur;
    const uint16_t* const sV = sV0 + cur;

    float s[NK][4];
    zero(s);
#pragma unroll
    for (int kc = 0; kc < HS / 16; ++kc)
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        uint32_t b0, b1;
        load_b_rows_n(b0, b1, sK, S, n * 8, kc * 16, g, t);
        mma_bf16(s[n], qf[kc], b0, b1);
      }

    float mxa = ma, mxb = mb;
#pragma unroll
    for (int n = 0; n < NK; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + n * 8 + 2 * t + (e & 1);
        const int i = e < 2 ? ra : rb;
        const bool ok = j < T && (!CAUSAL || j <= i);
        s[n][e] = ok ? s[n][e] * scale_log2 : -INFINITY;
        if (e < 2) mxa = fmaxf(mxa, s[n][e]);
        else mxb = fmaxf(mxb, s[n][e]);
      }
    mxa = quad_max(mxa);
    mxb = quad_max(mxb);
    // A row that has seen no key yet keeps max -inf; subtracting 0 then keeps exp2f(-inf) = 0 (not NaN).
    const float ua = mxa == -INFINITY ? 0.f : mxa, ub = mxb == -INFINITY ? 0.f : mxb;
    const float ca = exp2f(ma - ua), cb = exp2f(mb - ub);
    ma = mxa;
    mb = mxb;
    float suma = 0.f, sumb = 0.f;
#pragma unroll
    for (int n = 0; n < NK; ++n) {
      s[n][0] = exp2f(s[n][0] - ua);
      s[n][1] = exp2f(s[n][1] - ua);
      s[n][2] = exp2f(s[n][2] - ub);
      s[n][3] = exp2f(s[n][3] - ub);
      suma += s[n][0] + s[n][1];
      sumb += s[n][2] + s[n][3];
    }
    la = la * ca + suma;
    lb = lb * cb + sumb;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      o[n][0] *= ca;
      o[n][1] *= ca;
      o[n][2] *= cb;
      o[n][3] *= cb;
    }
#pragma unroll
    for (int kc = 0; kc < BK / 16; ++kc) {
      uint32_t pa[4];
      acc_to_a<NK>(pa, s, kc);
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        uint32_t b0, b1;
        load_b_rows_k<LDSM>(b0, b1, sV, S, kc * 16, n * 8, g, t);
        mma_bf16(o[n], pa, b0, b1);
      }
    }
    const int was = cur;
    cur = nxt;
    nxt = was;
  }

  la = quad_sum(la);
  lb = quad_sum(lb);
  const float ia = 1.f / la, ib = 1.f / lb;
  uint16_t* o_dst = out + size_t(b) * T * C + size_t(h) * HS;
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    const int c = n * 8 + 2 * t;
    if (ra < T) *reinterpret_cast<uint32_t*>(o_dst + size_t(ra) * C + c) = pack_f32(o[n][0] * ia, o[n][1] * ia);
    if (rb < T) *reinterpret_cast<uint32_t*>(o_dst + size_t(rb) * C + c) = pack_f32(o[n][2] * ib, o[n][3] * ib);
  }
  if (t == 0) {
    if (ra < T) lse[size_t(bh) * T + ra] = (ma + log2f(la)) * kLn2;
    if (rb < T) lse[size_t(bh) * T + rb] = (mb + log2f(lb)) * kLn2;
  }
}

// ---- backward, pass 1: dq (and delta) ----

// Keys per tile of the dq pass: 64, or 32 when hs = 128 (registers).
template <int HS>
constexpr int kDqKeyTile = HS == 128 ? 32 : 64;

// Dynamic shared memory of the dq pass: K and V tiles (kDqKeyTile<HS>, HS + 8) bf16, two of each when PIPE
// (static shared arrays, one of each, in the first version; the same bytes).
template <int HS, bool PIPE>
constexpr size_t dq_smem_bytes() {
  return (PIPE ? 4 : 2) * size_t(kDqKeyTile<HS>) * (HS + 8) * sizeof(uint16_t);
}

// The q part of dqkv (B,T,3C) and delta (B,NH,T) (OVERWRITE). grid (ceil(T/64), B*NH), dynamic shared memory
// dq_smem_bytes<HS, PIPE>(); K and V tiles staged as the forward stages them.
template <int HS, bool CAUSAL, bool LDSM, bool PIPE>
__global__ void __launch_bounds__(kThreads) attention_backward_dq_kernel(
    uint16_t* __restrict__ dqkv, float* __restrict__ delta, const uint16_t* __restrict__ dout,
    const uint16_t* __restrict__ qkv, const uint16_t* __restrict__ out, const float* __restrict__ lse, int T, int C,
    int NH, float scale, float scale_log2) {
  constexpr int BK = kDqKeyTile<HS>;
  constexpr int S = HS + 8;
  constexpr int NK = BK / 8;
  constexpr int NO = HS / 8;
  constexpr int kBuffers = PIPE ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* const sK0 = reinterpret_cast<uint16_t*>(smem);  // kBuffers K tiles (BK, S), then as many V tiles
  uint16_t* const sV0 = sK0 + kBuffers * BK * S;

  const int qtile = CAUSAL ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t ld = 3 * size_t(C);
  const uint16_t* q_src = qkv + size_t(b) * T * ld + size_t(h) * HS;
  const uint16_t* k_src = q_src + C;
  const uint16_t* v_src = q_src + 2 * size_t(C);
  const uint16_t* do_src = dout + size_t(b) * T * C + size_t(h) * HS;
  const uint16_t* o_src = out + size_t(b) * T * C + size_t(h) * HS;
  const int q0 = qtile * kBlockRows;
  const int ra = q0 + warp * 16 + g, rb = ra + 8;
  const int kend = CAUSAL ? min(T, q0 + kBlockRows) : T;

  // PIPE: tile 0's copies go out first (buffer 0), in flight while Q, dO, O and lse are read.
  if constexpr (PIPE) {
    stage_rows<HS, BK, true>(sK0, k_src, ld, 0, T);
    stage_rows<HS, BK, true>(sV0, v_src, ld, 0, T);
    cp_async_commit();
  }
  uint32_t qf[HS / 16][4], df[HS / 16][4];
  load_a_rows_global<HS>(qf, q_src, ld, ra, rb, T, t);
  load_a_rows_global<HS>(df, do_src, C, ra, rb, T, t);

  // D = rowsum(dO * O): each thread takes the columns its dO fragments hold, then the quad sums.
  float Da = 0.f, Db = 0.f;
#pragma unroll
  for (int kc = 0; kc < HS / 16; ++kc) {
    const int c = kc * 16 + 2 * t;
    if (ra < T) Da += dot_pair(df[kc][0], ld32(o_src + size_t(ra) * C + c)) +
                      dot_pair(df[kc][2], ld32(o_src + size_t(ra) * C + c + 8));
    if (rb < T) Db += dot_pair(df[kc][1], ld32(o_src + size_t(rb) * C + c)) +
                      dot_pair(df[kc][3], ld32(o_src + size_t(rb) * C + c + 8));
  }
  Da = quad_sum(Da);
  Db = quad_sum(Db);
  if (t == 0) {
    if (ra < T) delta[size_t(bh) * T + ra] = Da;
    if (rb < T) delta[size_t(bh) * T + rb] = Db;
  }
  const float La = ra < T ? lse[size_t(bh) * T + ra] * kLog2e : 0.f;
  const float Lb = rb < T ? lse[size_t(bh) * T + rb] * kLog2e : 0.f;

  float dq[NO][4];
  zero(dq);
  // PIPE: tile i is in buffer i % 2; cur is this tile's offset in sK0 / sV0, nxt the other buffer's.
  int cur = 0, nxt = PIPE ? BK * S : 0;
  for (int k0 = 0; k0 < kend; k0 += BK) {
    stage_kv_tile<HS, BK, PIPE>(sK0, sV0, nxt, k_src, v_src, ld, k0, kend, T);
    const uint16_t* const sK = sK0 + cur;
    const uint16_t* const sV = sV0 + cur;

    float s[NK][4], dp[NK][4];
    zero(s);
    zero(dp);
#pragma unroll
    for (int kc = 0; kc < HS / 16; ++kc)
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        uint32_t b0, b1;
        load_b_rows_n(b0, b1, sK, S, n * 8, kc * 16, g, t);
        mma_bf16(s[n], qf[kc], b0, b1);
        load_b_rows_n(b0, b1, sV, S, n * 8, kc * 16, g, t);
        mma_bf16(dp[n], df[kc], b0, b1);
      }
    // s becomes dS = P (dP - D); masked entries (and rows past T) are 0.
#pragma unroll
    for (int n = 0; n < NK; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + n * 8 + 2 * t + (e & 1);
        const int i = e < 2 ? ra : rb;
        const bool ok = i < T && j < T && (!CAUSAL || j <= i);
        const float p = ok ? exp2f(s[n][e] * scale_log2 - (e < 2 ? La : Lb)) : 0.f;
        s[n][e] = p * (dp[n][e] - (e < 2 ? Da : Db));
      }
#pragma unroll
    for (int kc = 0; kc < BK / 16; ++kc) {
      uint32_t a[4];
      acc_to_a<NK>(a, s, kc);
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        uint32_t b0, b1;
        load_b_rows_k<LDSM>(b0, b1, sK, S, kc * 16, n * 8, g, t);
        mma_bf16(dq[n], a, b0, b1);
      }
    }
    const int was = cur;
    cur = nxt;
    nxt = was;
  }

  uint16_t* dq_dst = dqkv + size_t(b) * T * ld + size_t(h) * HS;
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    const int c = n * 8 + 2 * t;
    if (ra < T)
      *reinterpret_cast<uint32_t*>(dq_dst + size_t(ra) * ld + c) = pack_f32(dq[n][0] * scale, dq[n][1] * scale);
    if (rb < T)
      *reinterpret_cast<uint32_t*>(dq_dst + size_t(rb) * ld + c) = pack_f32(dq[n][2] * scale, dq[n][3] * scale);
  }
}

// ---- backward, pass 2: dk and dv ----

// Dynamic shared memory of the dk/dv pass: K and V of the block's 64 keys ((64, HS + 8) bf16 each), and a query
// tile's Q and dO ((kDkdvQueryTile, HS + 8) bf16 each), lse and delta (kDkdvQueryTile fp32 each), two buffers of
// the query tile's four when PIPE.
template <int HS, bool PIPE>
constexpr size_t dkdv_smem_bytes() {
  constexpr size_t kBuffers = PIPE ? 2 : 1;
  return (2 * size_t(kBlockRows) + 2 * kBuffers * kDkdvQueryTile) * (HS + 8) * sizeof(uint16_t) +
         2 * kBuffers * kDkdvQueryTile * sizeof(float);
}

// Stages query tile [q0, q0 + kDkdvQueryTile) of the dk/dv pass: Q and dO rows, lse and delta (rows past T zero),
// with plain loads and stores or (ASYNC) cp.async copies not waited for.
template <int HS, bool ASYNC>
__device__ __forceinline__ void stage_query_tile(uint16_t* sQ, uint16_t* sdO, float* sL, float* sD,
                                                 const uint16_t* q_src, size_t ld, const uint16_t* do_src, int C,
                                                 const float* lse_bh, const float* delta_bh, int q0, int T) {
  stage_rows<HS, kDkdvQueryTile, ASYNC>(sQ, q_src, ld, q0, T);
  stage_rows<HS, kDkdvQueryTile, ASYNC>(sdO, do_src, C, q0, T);
  stage_floats<kDkdvQueryTile, ASYNC>(sL, lse_bh, q0, T);
  stage_floats<kDkdvQueryTile, ASYNC>(sD, delta_bh, q0, T);
}

// The k and v parts of dqkv (B,T,3C) (OVERWRITE). grid (ceil(T/64), B*NH), dynamic shared memory
// dkdv_smem_bytes<HS, PIPE>(). PIPE: the block's K and V and the first query tile go out as one cp.async group
// before the loop, then each tile's group is issued a tile ahead as in the forward.
template <int HS, bool CAUSAL, bool LDSM, bool PIPE>
__global__ void __launch_bounds__(kThreads) attention_backward_dkdv_kernel(
    uint16_t* __restrict__ dqkv, const uint16_t* __restrict__ dout, const uint16_t* __restrict__ qkv,
    const float* __restrict__ lse, const float* __restrict__ delta, int T, int C, int NH, float scale,
    float scale_log2) {
  constexpr int BQ = kDkdvQueryTile;
  constexpr int S = HS + 8;
  constexpr int NQ = BQ / 8;  // score n-tiles (queries)
  constexpr int NO = HS / 8;
  constexpr int kBuffers = PIPE ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* const sK = reinterpret_cast<uint16_t*>(smem);  // (64, S)
  uint16_t* const sV = sK + kBlockRows * S;                 // (64, S)
  uint16_t* const sQ0 = sV + kBlockRows * S;                // kBuffers (BQ, S)
  uint16_t* const sdO0 = sQ0 + kBuffers * BQ * S;           // kBuffers (BQ, S)
  float* const sL0 = reinterpret_cast<float*>(sdO0 + kBuffers * BQ * S);  // kBuffers (BQ) lse (natural log)
  float* const sD0 = sL0 + kBuffers * BQ;                                 // kBuffers (BQ) delta

  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const size_t ld = 3 * size_t(C);
  const uint16_t* q_src = qkv + size_t(b) * T * ld + size_t(h) * HS;
  const uint16_t* k_src = q_src + C;
  const uint16_t* v_src = q_src + 2 * size_t(C);
  const uint16_t* do_src = dout + size_t(b) * T * C + size_t(h) * HS;
  const float* lse_bh = lse + size_t(bh) * T;
  const float* delta_bh = delta + size_t(bh) * T;
  const int k0 = blockIdx.x * kBlockRows;
  const int kw = warp * 16;             // the warp's first key row in sK / sV
  const int ja = k0 + kw + g, jb = ja + 8;  // this thread's two keys

  const int qstart = CAUSAL ? (k0 / BQ) * BQ : 0;  // qstart <= k0 < T: at least one query tile
  stage_rows<HS, kBlockRows, PIPE>(sK, k_src, ld, k0, T);
  stage_rows<HS, kBlockRows, PIPE>(sV, v_src, ld, k0, T);
  if constexpr (PIPE) {  // the first query tile joins K and V's group (buffer 0)
    stage_query_tile<HS, true>(sQ0, sdO0, sL0, sD0, q_src, ld, do_src, C, lse_bh, delta_bh, qstart, T);
    cp_async_commit();
  }
  float dk[NO][4], dv[NO][4];
  zero(dk);
  zero(dv);

  int cur = 0;  // PIPE: query tile i is in buffer i % 2; cur is this tile's
  for (int q0 = qstart; q0 < T; q0 += BQ) {
    // Every warp is done with the previous query tile: its buffer (PIPE: the one the next tile refills) is free.
    __syncthreads();
    if constexpr (PIPE) {
      const int nxt = cur ^ 1;
      if (q0 + BQ < T)
        stage_query_tile<HS, true>(sQ0 + nxt * BQ * S, sdO0 + nxt * BQ * S, sL0 + nxt * BQ, sD0 + nxt * BQ, q_src,
                                   ld, do_src, C, lse_bh, delta_bh, q0 + BQ, T);
      cp_async_commit();   // the next tile's group (empty on the last tile)
      cp_async_wait<1>();  // this thread's copies of this tile (and, on the first, of K and V) have landed
    } else {
      stage_query_tile<HS, false>(sQ0, sdO0, sL0, sD0, q_src, ld, do_src, C, lse_bh, delta_bh, q0, T);
    }
    __syncthreads();  // the tile (and sK, sV), from every thread's copies, is visible to every warp
    const uint16_t* const sQ = sQ0 + cur * BQ * S;
    const uint16_t* const sdO = sdO0 + cur * BQ * S;
    const float* const sL = sL0 + cur * BQ;
    const float* const sD = sD0 + cur * BQ;

    float s[NQ][4], dp[NQ][4];  // S^T and dP^T: 16 keys x BQ queries
    zero(s);
    zero(dp);
#pragma unroll
    for (int kc = 0; kc < HS / 16; ++kc) {
      uint32_t ka[4], va[4];
      load_a_smem(ka, sK, S, kw, kc * 16, g, t);
      load_a_smem(va, sV, S, kw, kc * 16, g, t);
#pragma unroll
      for (int n = 0; n < NQ; ++n) {
        uint32_t b0, b1;
        load_b_rows_n(b0, b1, sQ, S, n * 8, kc * 16, g, t);
        mma_bf16(s[n], ka, b0, b1);
        load_b_rows_n(b0, b1, sdO, S, n * 8, kc * 16, g, t);
        mma_bf16(dp[n], va, b0, b1);
      }
    }
    // s becomes P^T, dp becomes dS^T = P^T (dP^T - D); masked entries are 0.
#pragma unroll
    for (int n = 0; n < NQ; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int il = n * 8 + 2 * t + (e & 1);
        const int i = q0 + il;
        const int j = e < 2 ? ja : jb;
        const bool ok = i < T && j < T && (!CAUSAL || j <= i);
        // lse * log2(e) rounded on its own (__fmul_rn is never contracted), as the first version stored it.
        const float p = ok ? exp2f(s[n][e] * scale_log2 - __fmul_rn(sL[il], kLog2e)) : 0.f;
        s[n][e] = p;
        dp[n][e] = p * (dp[n][e] - sD[il]);
      }
#pragma unroll
    for (int kc = 0; kc < BQ / 16; ++kc) {
      uint32_t pa[4], da[4];
      acc_to_a<NQ>(pa, s, kc);
      acc_to_a<NQ>(da, dp, kc);
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        uint32_t b0, b1;
        load_b_rows_k<LDSM>(b0, b1, sdO, S, kc * 16, n * 8, g, t);
        mma_bf16(dv[n], pa, b0, b1);
        load_b_rows_k<LDSM>(b0, b1, sQ, S, kc * 16, n * 8, g, t);
        mma_bf16(dk[n], da, b0, b1);
      }
    }
    if constexpr (PIPE) cur ^= 1;
  }

  uint16_t* dk_dst = dqkv + size_t(b) * T * ld + C + size_t(h) * HS;
  uint16_t* dv_dst = dk_dst + C;
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    const int c = n * 8 + 2 * t;
    if (ja < T) {
      *reinterpret_cast<uint32_t*>(dk_dst + size_t(ja) * ld + c) = pack_f32(dk[n][0] * scale, dk[n][1] * scale);
      *reinterpret_cast<uint32_t*>(dv_dst + size_t(ja) * ld + c) = pack_f32(dv[n][0], dv[n][1]);
    }
    if (jb < T) {
      *reinterpret_cast<uint32_t*>(dk_dst + size_t(jb) * ld + c) = pack_f32(dk[n][2] * scale, dk[n][3] * scale);
      *reinterpret_cast<uint32_t*>(dv_dst + size_t(jb) * ld + c) = pack_f32(dv[n][2], dv[n][3]);
    }
  }
}

// ---- launchers ----

struct Geometry {
  int hs;
  float scale, scale_log2;
  dim3 grid;
};

// Checks the dimensions (throws std::invalid_argument naming the bad one); grid.x == 0 means no work.
Geometry geometry(const char* who, int B, int T, int C, int NH) {
  cuda_detail::check_nonnegative(who, "B", B);
  cuda_detail::check_nonnegative(who, "T", T);
  if (NH < 1 || C < 1 || C % NH != 0)
    throw std::invalid_argument(std::string(who) + ": C = " + std::to_string(C) + ", NH = " + std::to_string(NH) +
                                " (expected NH >= 1 heads dividing C)");
  Geometry geo;
  geo.hs = C / NH;
  if (geo.hs != 64 && geo.hs != 128)
    throw std::invalid_argument(std::string(who) + ": head size C/NH = " + std::to_string(geo.hs) +
                                " is not supported (64 or 128; use the CPU attention for others)");
  if (size_t(B) * NH > 65535)
    throw std::invalid_argument(std::string(who) + ": B * NH = " + std::to_string(size_t(B) * NH) +
                                " exceeds 65535 (the grid's y dimension); split the batch");
  geo.scale = 1.f / std::sqrt(float(geo.hs));
  geo.scale_log2 = geo.scale * kLog2e;
  geo.grid = dim3(unsigned((T + kBlockRows - 1) / kBlockRows), unsigned(B * NH));
  return geo;
}

int device_sm_major() {
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major;
}

void check_sm80(const char* who) {
  const int major = device_sm_major();
  if (major < 8)
    throw std::invalid_argument(std::string(who) + ": needs compute capability 8.0 or later (bf16 tensor cores); "
                                "this device has " + std::to_string(major) + ".x (use the CPU attention)");
}

// -1 until the first attention_ldmatrix() reads COVENANT_ATTENTION_LDMATRIX; then 1 (ldmatrix) or 0 (gathers).
std::atomic<int> g_ldmatrix{-1};
// -1 until the first attention_pipeline() reads COVENANT_ATTENTION_PIPELINE; then 1 (cp.async) or 0 (plain).
std::atomic<int> g_pipeline{-1};

// A switch that defaults to on: the first read takes it from the environment variable `name` ("0" = off,
// anything else or unset = on), unless a setter stored it first; later reads return what is stored.
bool env_switch(std::atomic<int>& slot, const char* name) {
  int v = slot.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv(name);
    int expected = -1;
    slot.compare_exchange_strong(expected, env && std::strcmp(env, "0") == 0 ? 0 : 1);
    v = slot.load(std::memory_order_relaxed);
  }
  return v != 0;
}

template <int HS, bool CAUSAL, bool PIPE>
void launch_forward_staged(const Geometry& geo, bool ldsm, uint16_t* out, float* lse, const uint16_t* qkv, int T,
                           int C, int NH, cudaStream_t s) {
  const auto kernel =
      ldsm ? attention_forward_kernel<HS, CAUSAL, true, PIPE> : attention_forward_kernel<HS, CAUSAL, false, PIPE>;
  constexpr size_t smem = forward_smem_bytes<HS, PIPE>();
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<geo.grid, kThreads, smem, s>>>(out, lse, qkv, T, C, NH, geo.scale_log2);
  CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

// The B loader and the staging of every kernel launched by one attention_forward / attention_backward call are
// chosen once per call.
template <int HS, bool CAUSAL>
void launch_forward(const Geometry& geo, uint16_t* out, float* lse, const uint16_t* qkv, int T, int C, int NH,
                    cudaStream_t s) {
  const bool ldsm = attention_ldmatrix();
  if (attention_pipeline()) launch_forward_staged<HS, CAUSAL, true>(geo, ldsm, out, lse, qkv, T, C, NH, s);
  else launch_forward_staged<HS, CAUSAL, false>(geo, ldsm, out, lse, qkv, T, C, NH, s);
}

template <int HS, bool CAUSAL, bool PIPE>
void launch_backward_staged(const Geometry& geo, bool ldsm, uint16_t* dqkv, float* delta, const uint16_t* dout,
                            const uint16_t* qkv, const uint16_t* out, const float* lse, int T, int C, int NH,
                            cudaStream_t s) {
  const auto dq = ldsm ? attention_backward_dq_kernel<HS, CAUSAL, true, PIPE>
                       : attention_backward_dq_kernel<HS, CAUSAL, false, PIPE>;
  const auto dkdv = ldsm ? attention_backward_dkdv_kernel<HS, CAUSAL, true, PIPE>
                         : attention_backward_dkdv_kernel<HS, CAUSAL, false, PIPE>;
  constexpr size_t dq_smem = dq_smem_bytes<HS, PIPE>();
  CUDA_CHECK(cudaFuncSetAttribute(dq, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dq_smem)));
  dq<<<geo.grid, kThreads, dq_smem, s>>>(dqkv, delta, dout, qkv, out, lse, T, C, NH, geo.scale, geo.scale_log2);
  CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
  constexpr size_t dkdv_smem = dkdv_smem_bytes<HS, PIPE>();
  CUDA_CHECK(cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dkdv_smem)));
  dkdv<<<geo.grid, kThreads, dkdv_smem, s>>>(dqkv, dout, qkv, lse, delta, T, C, NH, geo.scale, geo.scale_log2);
  CUDA_CHECK_LAUNCH("attention_backward_dkdv_kernel");
}

template <int HS, bool CAUSAL>
void launch_backward(const Geometry& geo, uint16_t* dqkv, float* delta, const uint16_t* dout, const uint16_t* qkv,
                     const uint16_t* out, const float* lse, int T, int C, int NH, cudaStream_t s) {
  const bool ldsm = attention_ldmatrix();
  if (attention_pipeline())
    launch_backward_staged<HS, CAUSAL, true>(geo, ldsm, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
  else
    launch_backward_staged<HS, CAUSAL, false>(geo, ldsm, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
}

}  // namespace

bool attention_ldmatrix() { return env_switch(g_ldmatrix, "COVENANT_ATTENTION_LDMATRIX"); }

void set_attention_ldmatrix(bool on) { g_ldmatrix.store(on ? 1 : 0, std::memory_order_relaxed); }

bool attention_pipeline() { return env_switch(g_pipeline, "COVENANT_ATTENTION_PIPELINE"); }

void set_attention_pipeline(bool on) { g_pipeline.store(on ? 1 : 0, std::memory_order_relaxed); }

void attention_forward(uint16_t* out, float* lse, const uint16_t* qkv, int B, int T, int C, int NH, bool causal,
                       void* stream) {
  const char* who = "cuda::attention_forward";
  const Geometry geo = geometry(who, B, T, C, NH);
  if (geo.grid.x == 0 || geo.grid.y == 0) return;
  cuda_detail::check_aligned(who, "qkv", qkv, 16);
  cuda_detail::check_aligned(who, "out", out, 4);
  cuda_detail::check_aligned(who, "lse", lse, 4);
  check_sm80(who);
  const cudaStream_t s = cuda_detail::as_stream(stream);
  if (geo.hs == 64) {
    if (causal) launch_forward<64, true>(geo, out, lse, qkv, T, C, NH, s);
    else launch_forward<64, false>(geo, out, lse, qkv, T, C, NH, s);
  } else {
    if (causal) launch_forward<128, true>(geo, out, lse, qkv, T, C, NH, s);
    else launch_forward<128, false>(geo, out, lse, qkv, T, C, NH, s);
  }
}

void attention_backward(uint16_t* dqkv, float* delta, const uint16_t* dout, const uint16_t* qkv, const uint16_t* out,
                        const float* lse, int B, int T, int C, int NH, bool causal, void* stream) {
  const char* who = "cuda::attention_backward";
  const Geometry geo = geometry(who, B, T, C, NH);
  if (geo.grid.x == 0 || geo.grid.y == 0) return;
  cuda_detail::check_aligned(who, "qkv", qkv, 16);
  cuda_detail::check_aligned(who, "dout", dout, 16);
  cuda_detail::check_aligned(who, "out", out, 4);
  cuda_detail::check_aligned(who, "dqkv", dqkv, 4);
  cuda_detail::check_aligned(who, "lse", lse, 4);
  cuda_detail::check_aligned(who, "delta", delta, 4);
  check_sm80(who);
  const cudaStream_t s = cuda_detail::as_stream(stream);
  if (geo.hs == 64) {
    if (causal) launch_backward<64, true>(geo, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
    else launch_backward<64, false>(geo, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
  } else {
    if (causal) launch_backward<128, true>(geo, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
    else launch_backward<128, false>(geo, dqkv, delta, dout, qkv, out, lse, T, C, NH, s);
  }
}

}  // namespace cuda
}  // namespace covenant

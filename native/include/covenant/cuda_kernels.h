// The GPT engine's layer kernels on a CUDA device: the same operations as kernels.h (the CPU path, their
// numerical reference), on device memory. Built only where CMake finds the CUDA toolkit (COVENANT_HAVE_CUDA=1);
// no CUDA types appear here.
// Dimensions: B batch, T time, C channels, NH heads, hs = C/NH head size, V vocabulary, N = B*T rows.
// Argument order: outputs (gradients prefixed d), scratch, then inputs, then dimensions, then the stream.
//
// Every pointer is DEVICE memory (cudaMalloc); `stream` is a cudaStream_t passed as void* (nullptr: the legacy
// default stream). The calls are ASYNCHRONOUS: each checks its arguments (std::invalid_argument naming the bad
// one), enqueues its kernels on `stream` and checks the launch (std::runtime_error naming the kernel, file and
// line); a fault while a kernel runs surfaces at the next synchronizing CUDA call. Zero-sized work launches
// nothing. Inputs must not alias outputs except where a kernel says "in place".
//
// Accumulate or overwrite, as on the CPU: every *_backward ACCUMULATES (+=) into the gradients it produces,
// except attention_backward and attention_fp32_backward, which OVERWRITE dqkv (as attention_flash_backward
// does).
//
// bf16 tensors are raw bit patterns (uint16_t: the upper half of an fp32), as safetensors stores them; the
// inline helpers below convert on the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace covenant {
namespace cuda {

// fp32 -> bf16, round to nearest even (what __float2bfloat16_rn does); NaN stays a (quiet) NaN.
inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- encoder (token + position embedding), fp32 ----
// out (B,T,C) = wte[inp] + wpe[t]; inp (B,T) token ids already checked to be < V (as on the CPU).
void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B, int T, int C,
                     void* stream);
// dwte (V,C) += ..., dwpe (>= T rows, C) += ... (ACCUMULATE). Deterministic and bit-identical with the CPU's
// encoder_backward: each channel's sums run in the CPU's order (row bt = 0, 1, ...) on one thread, so no
// atomics. dwte is therefore parallel over C channels only (latency-bound for large B*T; see encoder.cu).
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B, int T, int C,
                      void* stream);

// ---- LayerNorm over the last dimension, fp32, eps 1e-5 ----
// out (N,C), mean (N), rstd (N) from inp (N,C), weight (C), bias (C).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, void* stream);
// Floats of device scratch layernorm_backward needs (per-block partial sums of dweight and dbias).
size_t layernorm_backward_scratch_floats(int N, int C);
// dinp (N,C) +=, dweight (C) +=, dbias (C) += (ACCUMULATE); scratch (layernorm_backward_scratch_floats) is
// overwritten. Deterministic: dweight/dbias are summed per block of rows in row order, then over blocks in
// block order (fixed by N, not by the device).
void layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd, int N, int C,
                        void* stream);

// ---- GELU, tanh approximation (as GPT-2), fp32, n elements ----
void gelu_forward(float* out, const float* inp, size_t n, void* stream);
// dinp (n) += gelu'(inp) * dout (ACCUMULATES).
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, void* stream);

// ---- softmax cross-entropy fused with its backward, fp32 ----
// logits (N,V), targets (N) in [0, V). losses (N) = logsumexp(row) - row[target] (a target outside [0, V)
// gives a NaN loss and no gradient). With dlogits_scale != 0, logits are overwritten IN PLACE by
// (softmax(row) - onehot(target)) * dlogits_scale, as crossentropy_forward_backward does. Unlike the CPU call
// it returns nothing: the mean loss is the caller's sum over losses / N (avoids a synchronization here).
// Reads each row twice (an online max and sum, then the gradient) and writes it once.
void crossentropy_forward_backward(float* logits, float* losses, const int32_t* targets, int N, int V,
                                   float dlogits_scale, void* stream);

// ---- AdamW on fp32 master weights (bias-corrected, decoupled weight decay), t >= 1 ----
// params, m, v (n) UPDATED in place from grads (n) * grad_scale; the same fp32 operations in the same order
// as adamw_update (bias corrections computed on the host with the same powf).
void adamw_update(float* params, float* m, float* v, const float* grads, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t, void* stream);

// ---- attention (FlashAttention-2 style), bf16 in and out, fp32 accumulation on tensor cores ----
// Needs compute capability 8.0 or later (mma.sync bf16). Head size hs = C/NH must be 64 or 128; any T >= 1.
// Layout (the engine's, as kernels.h): qkv (B,T,3C) bf16 holds q, k, v at columns [0,C), [C,2C), [2C,3C) of
// each row, each NH heads of hs; out (B,T,C) bf16; lse (B,NH,T) fp32, the natural-log log-sum-exp of each
// query row's scores q.k/sqrt(hs) over the keys it sees (all keys, or keys t2 <= t when causal).
// qkv and dout must be 16-byte aligned (cudaMalloc is); out and dqkv 4-byte aligned.
void attention_forward(uint16_t* out, float* lse, const uint16_t* qkv, int B, int T, int C, int NH, bool causal,
                       void* stream);
// dqkv (B,T,3C) bf16 OVERWRITTEN with the gradients of q, k, v; delta (B,NH,T) fp32 scratch, overwritten
// (rowsum(dout * out), written by the dq pass and read by the dk/dv pass); dout (B,T,C); qkv, out and lse are
// the forward's. Two kernels, no atomics: deterministic.
void attention_backward(uint16_t* dqkv, float* delta, const uint16_t* dout, const uint16_t* qkv, const uint16_t* out,
                        const float* lse, int B, int T, int C, int NH, bool causal, void* stream);
// How the two calls above load the B operand of their k-major products (P V, dS K, P^T dO, dS^T Q) from shared
// memory: true (the default) one ldmatrix.x2.trans per fragment, false two 16-bit loads per register (the first
// version). Both give the same fragments, so the same results bit for bit; kept both to test and time them on a
// device. The default comes from COVENANT_ATTENTION_LDMATRIX, read at the first call ("0" selects the 16-bit
// loads, anything else or unset ldmatrix); set_attention_ldmatrix overrides it for the calls that follow.
bool attention_ldmatrix();
void set_attention_ldmatrix(bool on);
// How the attention kernels stage the tiles they stream through shared memory (attention_forward: K and V;
// attention_backward: K and V in its dq pass, Q, dO, lse and delta in its dk/dv pass): true (the default) with
// cp.async into two buffers each, the next tile's copies in flight while the current tile is computed; false with
// plain loads and stores into one buffer each, nothing in flight during the compute (the first version). The
// same tiles, so the same results bit for bit; kept both to test and time them on a device. The default comes
// from COVENANT_ATTENTION_PIPELINE, read at the first call ("0" selects the plain staging, anything else or unset
// cp.async); set_attention_pipeline overrides it for the calls that follow.
bool attention_pipeline();
void set_attention_pipeline(bool on);

// ---- attention in fp32 (any head size, any compute capability): the GPT engine's fallback ----
// The same contract as attention_forward / attention_backward above, causal only, on fp32 tensors: one thread
// per query row (forward, dq pass) or per key (dk/dv pass), plain loops, no atomics. Correct but slow (it
// re-reads K and V from global memory per row); used where the bf16 kernels do not apply (head size not 64 or
// 128, compute capability below 8.0) or when the engine is asked for attention 'naive'.
// out (B,T,C), lse (B,NH,T) OVERWRITTEN from qkv (B,T,3C).
void attention_fp32_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH, void* stream);
// dqkv (B,T,3C) OVERWRITTEN; delta (B,NH,T) scratch, overwritten.
void attention_fp32_backward(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                             const float* lse, int B, int T, int C, int NH, void* stream);

// ---- small engine ops (engine_ops.cu), fp32 ----
// out (N,OC) += bias (OC) broadcast over rows.
void add_bias(float* out, const float* bias, int N, int OC, void* stream);
// dbias (OC) += column sums of dout (N,OC) (ACCUMULATES; each column summed in row order: deterministic).
void bias_backward(float* dbias, const float* dout, int N, int OC, void* stream);
// out (n) = a + b (OVERWRITES).
void residual_forward(float* out, const float* a, const float* b, size_t n, void* stream);
// out (n) = fl(a - b) (OVERWRITES): one IEEE subtraction per element, bit-identical to the host's.
void difference(float* out, const float* a, const float* b, size_t n, void* stream);
// bf16 (n) = round-to-nearest-even(f32); f32 (n) = bf16.
void f32_to_bf16(uint16_t* out, const float* inp, size_t n, void* stream);
void bf16_to_f32(float* out, const uint16_t* inp, size_t n, void* stream);
// Doubles of device scratch the reductions below need.
size_t reduce_scratch_doubles();
// *result (one double, device) = sum of x[i] (or of x[i]^2 with squares) over n, accumulated in double over a
// fixed partition (fixed by n, not by the device): deterministic. scratch: reduce_scratch_doubles().
void sum_to_double(double* result, double* scratch, const float* x, size_t n, bool squares, void* stream);

}  // namespace cuda
}  // namespace covenant

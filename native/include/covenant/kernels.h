// CPU layer kernels of the GPT engine, forward and backward side by side.
// Dimensions: B batch, T time, C channels, NH heads, hs = C/NH head size, V vocabulary, OC output channels.
// Argument order: outputs (gradients prefixed d), then inputs, then dimensions.
// Backward kernels ACCUMULATE (+=) into every gradient they produce, except attention_*_backward,
// which OVERWRITES dqkv (each element of dqkv belongs to exactly one (b, head)).
#pragma once
#include <cstddef>
#include <cstdint>

#include "covenant/gemm.h"

namespace covenant {

class ThreadPool;

// out (B,T,C) = wte[inp] + wpe[t]; inp (B,T) token ids already checked to be < V.
void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B, int T, int C,
                     ThreadPool* pool);
// dwte (V,C) += ..., dwpe (maxT,C) += ...; parallel over channels so accumulation order is fixed.
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B, int T, int C,
                      ThreadPool* pool);

// out (N,C), mean (N), rstd (N) from inp (N,C); N = B*T rows. eps = 1e-5.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, ThreadPool* pool);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C, ThreadPool* pool);

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); bias may be null.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                    GemmBackend gemm, ThreadPool* pool);
// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += column sums (if not null).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, GemmBackend gemm, ThreadPool* pool);

// GELU, tanh approximation (as GPT-2). n elements.
void gelu_forward(float* out, const float* inp, size_t n, ThreadPool* pool);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, ThreadPool* pool);

// out = a + b (n elements).
void residual_forward(float* out, const float* a, const float* b, size_t n, ThreadPool* pool);

// Causal self-attention. qkv (B,T,3C) holds q, k, v (each C, NH heads of hs); out (B,T,C).
// Naive: stores preatt and att (B,NH,T,T). Reference for tests and the bench.
void attention_naive_forward(float* out, float* preatt, float* att, const float* qkv, int B, int T, int C, int NH,
                             ThreadPool* pool);
void attention_naive_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                              const float* att, int B, int T, int C, int NH, ThreadPool* pool);
// Flash: tiled with an online softmax; stores only lse (B,NH,T), the log-sum-exp of each query row's
// scaled scores. The backward recomputes the probabilities tile by tile.
void attention_flash_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                             ThreadPool* pool);
void attention_flash_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                              int B, int T, int C, int NH, ThreadPool* pool);
// Bytes of working memory each variant needs beyond its inputs and outputs (for the bench).
size_t attention_naive_scratch_bytes(int B, int T, int NH);
size_t attention_flash_scratch_bytes(int B, int T, int NH, int hs, int threads);

// Mean cross-entropy over N = B*T rows of logits (N,V) with targets (N). Returns the mean loss.
// With dlogits_scale != 0, logits are overwritten in place by d(mean loss)/d(logits) * dlogits_scale.
double crossentropy_forward_backward(float* logits, float* losses, const int32_t* targets, int N, int V,
                                     float dlogits_scale, ThreadPool* pool);

// Sum of squares of n values, accumulated in double over fixed chunks (deterministic for a thread count).
double sum_squares(const float* x, size_t n, ThreadPool* pool);

// One AdamW step on n parameters (bias-corrected, decoupled weight decay), t >= 1; grad_scale multiplies
// the gradient first (global-norm clipping).
void adamw_update(float* params, float* m, float* v, const float* grads, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int t, ThreadPool* pool);

}  // namespace covenant

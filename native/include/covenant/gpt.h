// The GPT-2 training engine on the CPU: one flat fp32 buffer each for parameters, gradients and the two
// AdamW moments; forward, backward and the optimizer step run on the engine's own thread pool.
// Dimensions: B batch, T time (T <= maxT), C channels, L layers, NH heads, V vocabulary.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "covenant/gemm.h"
#include "covenant/round_delta.h"

namespace covenant {

class ThreadPool;

struct GPTConfig {
  int vocab_size = 0;   // V
  int max_seq_len = 0;  // maxT
  int num_layers = 0;   // L
  int num_heads = 0;    // NH
  int channels = 0;     // C, divisible by NH
};

struct AdamWConfig {
  float lr = 3e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_clip = 1.0f;  // <= 0 disables clipping
};

struct StepResult {
  float loss;
  float grad_norm;  // global L2 norm before clipping
};

enum class AttentionKind { Flash, Naive };

struct ParamTensorInfo {
  const char* name;
  size_t offset;  // in floats
  size_t size;
  bool decay;     // weight decay applies (matrices only)
};

// A float buffer whose lifetime can outlive the engine (JS views hold a reference).
using SharedFloats = std::shared_ptr<float>;

class GPT {
 public:
  // Validates cfg (throws std::invalid_argument naming the field); initializes weights GPT-2 style.
  GPT(const GPTConfig& cfg, int threads, uint64_t seed);
  ~GPT();

  const GPTConfig& config() const { return cfg_; }
  size_t num_params() const { return num_params_; }
  int threads() const;
  const std::vector<ParamTensorInfo>& tensors() const { return tensors_; }

  float* params() { return params_.get(); }
  float* grads() { return grads_.get(); }
  float* adam_m() { return m_.get(); }
  float* adam_v() { return v_.get(); }
  SharedFloats params_shared() { return params_; }
  SharedFloats grads_shared() { return grads_; }
  SharedFloats adam_m_shared() { return m_; }
  SharedFloats adam_v_shared() { return v_; }
  int adam_step() const { return adam_t_; }
  void set_adam_step(int t) { adam_t_ = t; }

  void set_attention(AttentionKind k) { attention_ = k; }
  void set_gemm(GemmBackend g) { gemm_ = g; }
  AttentionKind attention() const { return attention_; }
  GemmBackend gemm_backend() const { return gemm_; }

  // tokens (B, T+1): inputs are each row's first T tokens, targets its last T. Ids must be < V.
  // Computes gradients of the mean loss into grads() (overwriting them); no update.
  float forward_backward(const int32_t* tokens, int B, int T);
  // forward_backward, global-norm clipping and one AdamW step.
  StepResult train_step(const int32_t* tokens, int B, int T, const AdamWConfig& opt);
  // Mean loss only (no gradients).
  float eval_loss(const int32_t* tokens, int B, int T);
  // inputs (B, T) -> out (B, T, V).
  void logits(float* out, const int32_t* inputs, int B, int T);
  // Samples max_new tokens after prompt (context cropped to maxT); top_k <= 0 means the full vocabulary.
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int max_new, float temperature, int top_k,
                                uint64_t seed);

  std::string params_hash() const;

  // The outer loop's Δ against the parameters at the round's start, compressed with this engine's own
  // error-feedback residual on its thread pool (RoundDelta, round_delta.h; allocated on first use).
  void mark_round_start();
  bool round_marked() const { return delta_ && delta_->marked(); }
  void compress_delta(int8_t* q, float* scales, int block);
  void copy_delta_residual(float* out);
  void load_delta_residual(const float* r);
  void reset_delta_residual();
  bool undo_compress_delta();

 private:
  RoundDelta& round_delta();

  void ensure_activations(int B, int T);
  void split_tokens(const int32_t* tokens, int B, int T, bool with_targets);
  void forward(int B, int T);
  void backward(int B, int T);

  GPTConfig cfg_;
  std::unique_ptr<ThreadPool> pool_;
  AttentionKind attention_ = AttentionKind::Flash;
  GemmBackend gemm_ = GemmBackend::Auto;
  size_t num_params_ = 0;
  std::vector<ParamTensorInfo> tensors_;
  SharedFloats params_, grads_, m_, v_;
  int adam_t_ = 0;

  struct Activations;
  std::unique_ptr<Activations> acts_;
  std::vector<int32_t> inputs_, targets_;
  std::unique_ptr<RoundDelta> delta_;
};

}  // namespace covenant

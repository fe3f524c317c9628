// The GPT-2 training engine on a CUDA device: the same model, parameter layout, initialization and optimizer as
// GPT (gpt.h, the CPU engine and its numerical reference), with every buffer in device memory:
//   - fp32 master parameters, gradients and AdamW moments: one cudaMalloc of 4 * num_params floats, each
//     class split into the 16 tensors of tensors() at the CPU's offsets;
//   - fp32 activations (one cudaMalloc, reused while B*T fits), bf16 copies of qkv / the attention output
//     for the bf16 tensor-core flash attention (head size 64 or 128 on sm_80+), fp32 attention elsewhere;
//   - GEMMs through cuda::GpuGemm (cuBLAS where built with it, else our own tiled kernel).
// Host copies of the four buffers exist only when asked for (host_copy), so params(), the hash and
// checkpoints see exactly the CPU's layout. Built only with COVENANT_HAVE_CUDA; no CUDA types appear here.
// Dimensions: B batch, T time (T <= maxT), C channels, L layers, NH heads, V vocabulary.
// Every CUDA error is thrown as std::runtime_error naming the call, file:line and the CUDA error.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "covenant/gpt.h"
#include "covenant/round_delta_cuda.h"

namespace covenant {

namespace cuda {
class GpuGemm;
}

// "" when a CUDA device can be used; otherwise why not ("no CUDA device: <cudaGetErrorString>").
std::string cuda_device_error();
// Name and compute capability of the current device, e.g. "NVIDIA H100 (sm_90)".
std::string cuda_device_description();

class GPTCuda {
 public:
  enum class Buffer { Params, Grads, AdamM, AdamV };

  // Validates cfg as GPT does (std::invalid_argument); initializes the weights exactly as GPT(cfg, _, seed)
  // on the host and uploads them. Throws std::runtime_error when there is no device or memory runs out.
  GPTCuda(const GPTConfig& cfg, uint64_t seed);
  ~GPTCuda();
  GPTCuda(const GPTCuda&) = delete;
  GPTCuda& operator=(const GPTCuda&) = delete;

  const GPTConfig& config() const { return cfg_; }
  size_t num_params() const { return num_params_; }
  const std::vector<ParamTensorInfo>& tensors() const { return tensors_; }
  int adam_step() const { return adam_t_; }
  void set_adam_step(int t) { adam_t_ = t; }

  // Flash: bf16 tensor-core attention where the head size (64, 128) and device (sm_80+) allow, else fp32.
  // Naive: always the fp32 attention kernels.
  void set_attention(AttentionKind k) { attention_ = k; }
  AttentionKind attention() const { return attention_; }
  // True when forward() uses the bf16 attention kernels for this model on this device.
  bool uses_bf16_attention() const;
  const char* gemm_name() const;

  // Downloads `which` into its host copy (allocated on first use, kept for the engine's lifetime) and returns
  // it: a snapshot, stale after the next step until host_copy is called again.
  SharedFloats host_copy(Buffer which);
  // Uploads num_params() floats from src (host) into `which` (Params, AdamM or AdamV).
  void upload(Buffer which, const float* src);

  // Same contracts as GPT's (tokens (B, T+1) host memory; ids checked against V on the host).
  float forward_backward(const int32_t* tokens, int B, int T);
  StepResult train_step(const int32_t* tokens, int B, int T, const AdamWConfig& opt);
  float eval_loss(const int32_t* tokens, int B, int T);
  void logits(float* out, const int32_t* inputs, int B, int T);
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int max_new, float temperature, int top_k,
                                uint64_t seed);
  // SHA-256 of the parameters' fp32 bytes (downloaded): equal to GPT::params_hash for equal parameters.
  std::string params_hash();

  // GPT's round-delta calls (gpt.h) on the device: θ_start, the residual and Δ stay in device memory
  // (RoundDeltaCuda, round_delta_cuda.h; allocated on first use); q, scales, out and r are host memory.
  void mark_round_start();
  bool round_marked() const { return delta_ && delta_->marked(); }
  void compress_delta(int8_t* q, float* scales, int block);
  void copy_delta_residual(float* out);
  void load_delta_residual(const float* r);
  void reset_delta_residual();
  bool undo_compress_delta();

 private:
  RoundDeltaCuda& round_delta();
  struct Activations;
  void ensure_activations(int B, int T);
  void split_tokens(const int32_t* tokens, int B, int T, bool with_targets);
  void forward(int B, int T);
  void backward(int B, int T);
  double mean_loss(int N);
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC);
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int N, int C, int OC);
  float* device(Buffer which) const;

  GPTConfig cfg_;
  size_t num_params_ = 0;
  std::vector<ParamTensorInfo> tensors_;
  AttentionKind attention_ = AttentionKind::Flash;
  int sm_major_ = 0;
  int adam_t_ = 0;
  float* dmem_ = nullptr;  // params | grads | m | v, num_params_ floats each (device)
  SharedFloats host_[4];
  std::unique_ptr<cuda::GpuGemm> gemm_;
  std::unique_ptr<Activations> acts_;
  std::vector<int32_t> inputs_, targets_;  // host staging
  std::unique_ptr<RoundDeltaCuda> delta_;
};

}  // namespace covenant

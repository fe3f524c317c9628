// GPT-2 forward, backward and AdamW on a CUDA device (include/covenant/gpt_cuda.h). The layer sequence, the
// zeroing of scratch before accumulating kernels and the optimizer are GPT's (native/model/gpt.cpp, the
// reference) line for line; the layers are the kernels of include/covenant/cuda_kernels.h, the GEMMs
// cuda::GpuGemm. All work is enqueued on the legacy default stream; every public call ends with a
// synchronizing copy or cudaDeviceSynchronize, so a fault in any kernel surfaces (as std::runtime_error) from
// the call that caused it.
// Dimensions: B batch, T time, C channels, L layers, NH heads, hs = C/NH, V vocabulary, BT = B*T rows.
#include "covenant/gpt_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "../core/cuda_check.h"
#include "covenant/cuda_gemm.h"
#include "covenant/cuda_kernels.h"
#include "covenant/rng.h"
#include "covenant/sha256.h"
#include "param_views.h"
#include "sample_token.h"
#include "token_rows.h"

namespace covenant {

namespace {

constexpr void* kStream = nullptr;  // the legacy default stream
constexpr size_t kAlign = 256;      // bytes; every activation tensor starts at a multiple

cudaStream_t raw_stream() { return static_cast<cudaStream_t>(kStream); }

}  // namespace

std::string cuda_device_error() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return std::string("no CUDA device: ") + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
  }
  if (n == 0) return "no CUDA device: cudaGetDeviceCount reported 0 devices";
  return "";
}

std::string cuda_device_description() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

// Device activations for one (B, T) in one allocation that only grows. Forward tensors are per layer
// (L, BT, ...) as on the CPU; backward scratch is one layer's worth, reused.
struct GPTCuda::Activations {
  int B = 0, T = 0;
  bool bf16 = false;
  void* mem = nullptr;
  size_t capacity = 0;  // bytes
  float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *lse, *attproj, *residual2, *ln2, *ln2_mean, *ln2_rstd,
      *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
  float *dres, *dres2, *dln, *datty, *dqkv, *dfch, *dfch_gelu, *delta, *ln_scratch;
  uint16_t *qkv_bf, *atty_bf, *datty_bf, *dqkv_bf;  // bf16 attention only (else null)
  double *red_scratch, *red_result;
  int32_t *inputs, *targets;
  ~Activations() {
    if (mem) cudaFree(mem);  // no throw from a destructor; a fault here would already have surfaced
  }
};

GPTCuda::GPTCuda(const GPTConfig& cfg, uint64_t seed) : cfg_(cfg) {
  const std::string why = cuda_device_error();
  if (!why.empty()) throw std::runtime_error(why);
  // The CPU engine validates cfg, lays out the tensors and draws the initial weights: the same values, bit for
  // bit, as GPT(cfg, threads, seed).
  GPT host(cfg, 1, seed);
  tensors_ = host.tensors();
  num_params_ = host.num_params();
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_major_, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaMalloc(&dmem_, 4 * num_params_ * sizeof(float)));
  try {
    CUDA_CHECK(cudaMemset(dmem_, 0, 4 * num_params_ * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(dmem_, host.params(), num_params_ * sizeof(float), cudaMemcpyHostToDevice));
    gemm_ = std::make_unique<cuda::GpuGemm>(cuda::GpuGemmImpl::Auto);
  } catch (...) {
    cudaFree(dmem_);
    throw;
  }
}

GPTCuda::~GPTCuda() {
  delta_.reset();
  acts_.reset();
  gemm_.reset();
  if (dmem_) cudaFree(dmem_);
}

float* GPTCuda::device(Buffer which) const {
  return dmem_ + static_cast<size_t>(which) * num_params_;
}

bool GPTCuda::uses_bf16_attention() const {
  const int hs = cfg_.channels / cfg_.num_heads;
  return attention_ == AttentionKind::Flash && (hs == 64 || hs == 128) && sm_major_ >= 8;
}

const char* GPTCuda::gemm_name() const { return cuda::gemm_impl_name(gemm_->impl()); }

SharedFloats GPTCuda::host_copy(Buffer which) {
  SharedFloats& h = host_[static_cast<int>(which)];
  if (!h) h = alloc_floats(num_params_);
  CUDA_CHECK(cudaMemcpy(h.get(), device(which), num_params_ * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

void GPTCuda::upload(Buffer which, const float* src) {
  if (which == Buffer::Grads) throw std::invalid_argument("GPTCuda::upload: gradients cannot be loaded");
  CUDA_CHECK(cudaMemcpy(device(which), src, num_params_ * sizeof(float), cudaMemcpyHostToDevice));
}

std::string GPTCuda::params_hash() {
  SharedFloats p = host_copy(Buffer::Params);
  return Sha256::hex(p.get(), num_params_ * sizeof(float));
}

RoundDeltaCuda& GPTCuda::round_delta() {
  if (!delta_) delta_ = std::make_unique<RoundDeltaCuda>(num_params_);
  return *delta_;
}

void GPTCuda::mark_round_start() { round_delta().mark(device(Buffer::Params)); }
void GPTCuda::compress_delta(int8_t* q, float* scales, int block) {
  round_delta().compress(q, scales, device(Buffer::Params), block);
}
void GPTCuda::copy_delta_residual(float* out) { round_delta().copy_residual(out); }
void GPTCuda::load_delta_residual(const float* r) { round_delta().load_residual(r); }
void GPTCuda::reset_delta_residual() { round_delta().reset_residual(); }
bool GPTCuda::undo_compress_delta() { return round_delta().undo_compress(); }

void GPTCuda::ensure_activations(int B, int T) {
  const bool bf16 = uses_bf16_attention();
  if (acts_ && acts_->B == B && acts_->T == T && acts_->bf16 == bf16) return;
  if (!acts_) acts_ = std::make_unique<Activations>();
  Activations& a = *acts_;
  const size_t BT = (size_t)B * T, C = cfg_.channels, L = cfg_.num_layers, NH = cfg_.num_heads,
               V = cfg_.vocab_size;
  const size_t F = sizeof(float), H = sizeof(uint16_t);
  const size_t BF = bf16 ? 1 : 0;
  const std::pair<void**, size_t> table[] = {
      {(void**)&a.encoded, BT * C * F},       {(void**)&a.ln1, L * BT * C * F},
      {(void**)&a.ln1_mean, L * BT * F},       {(void**)&a.ln1_rstd, L * BT * F},
      {(void**)&a.qkv, L * BT * 3 * C * F},    {(void**)&a.atty, L * BT * C * F},
      {(void**)&a.lse, L * B * NH * T * F},    {(void**)&a.attproj, L * BT * C * F},
      {(void**)&a.residual2, L * BT * C * F},  {(void**)&a.ln2, L * BT * C * F},
      {(void**)&a.ln2_mean, L * BT * F},       {(void**)&a.ln2_rstd, L * BT * F},
      {(void**)&a.fch, L * BT * 4 * C * F},    {(void**)&a.fch_gelu, L * BT * 4 * C * F},
      {(void**)&a.fcproj, L * BT * C * F},     {(void**)&a.residual3, L * BT * C * F},
      {(void**)&a.lnf, BT * C * F},            {(void**)&a.lnf_mean, BT * F},
      {(void**)&a.lnf_rstd, BT * F},           {(void**)&a.logits, BT * V * F},
      {(void**)&a.losses, BT * F},             {(void**)&a.dres, BT * C * F},
      {(void**)&a.dres2, BT * C * F},          {(void**)&a.dln, BT * C * F},
      {(void**)&a.datty, BT * C * F},          {(void**)&a.dqkv, BT * 3 * C * F},
      {(void**)&a.dfch, BT * 4 * C * F},       {(void**)&a.dfch_gelu, BT * 4 * C * F},
      {(void**)&a.delta, (size_t)B * NH * T * F},
      {(void**)&a.ln_scratch, cuda::layernorm_backward_scratch_floats(int(BT), int(C)) * F},
      {(void**)&a.qkv_bf, BF * L * BT * 3 * C * H}, {(void**)&a.atty_bf, BF * L * BT * C * H},
      {(void**)&a.datty_bf, BF * BT * C * H},        {(void**)&a.dqkv_bf, BF * BT * 3 * C * H},
      {(void**)&a.red_scratch, cuda::reduce_scratch_doubles() * sizeof(double)},
      {(void**)&a.red_result, sizeof(double)},
      {(void**)&a.inputs, BT * sizeof(int32_t)},     {(void**)&a.targets, BT * sizeof(int32_t)}};
  size_t total = 0;
  for (const auto& e : table) total += (e.second + kAlign - 1) / kAlign * kAlign;
  if (total > a.capacity) {
    if (a.mem) CUDA_CHECK(cudaFree(a.mem));
    a.mem = nullptr;
    a.capacity = 0;
    a.B = a.T = 0;
    const cudaError_t err = cudaMalloc(&a.mem, total);
    if (err != cudaSuccess) {
      cudaGetLastError();
      a.mem = nullptr;
      throw std::runtime_error("CUDA error: cudaMalloc of " + std::to_string(total >> 20) +
                               " MiB of activations for B = " + std::to_string(B) + ", T = " + std::to_string(T) +
                               " failed: " + cudaGetErrorString(err) + " (HINT: use a smaller batch)");
    }
    a.capacity = total;
  }
  char* cursor = static_cast<char*>(a.mem);
  for (const auto& e : table) {
    *e.first = e.second ? cursor : nullptr;
    cursor += (e.second + kAlign - 1) / kAlign * kAlign;
  }
  a.B = B;
  a.T = T;
  a.bf16 = bf16;
}

void GPTCuda::split_tokens(const int32_t* tokens, int B, int T, bool with_targets) {
  split_token_rows(tokens, B, T, with_targets, cfg_.max_seq_len, cfg_.vocab_size, inputs_, targets_);
}

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); bias may be null.
void GPTCuda::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                             int OC) {
  gemm_->gemm(Trans::N, Trans::T, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, OC, kStream);
  if (bias) cuda::add_bias(out, bias, N, OC, kStream);
}

// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += column sums (if not null).
void GPTCuda::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                              const float* weight, int N, int C, int OC) {
  gemm_->gemm(Trans::N, Trans::N, N, C, OC, 1.f, dout, OC, weight, C, 1.f, dinp, C, kStream);
  gemm_->gemm(Trans::T, Trans::N, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dweight, C, kStream);
  if (dbias) cuda::bias_backward(dbias, dout, N, OC, kStream);
}

void GPTCuda::forward(int B, int T) {
  ensure_activations(B, T);
  Activations& a = *acts_;
  const int C = cfg_.channels, NH = cfg_.num_heads, V = cfg_.vocab_size, BT = B * T;
  CUDA_CHECK(cudaMemcpy(a.inputs, inputs_.data(), (size_t)BT * sizeof(int32_t), cudaMemcpyHostToDevice));
  if (!targets_.empty())
    CUDA_CHECK(cudaMemcpy(a.targets, targets_.data(), (size_t)BT * sizeof(int32_t), cudaMemcpyHostToDevice));
  ParamViews w = point(device(Buffer::Params), tensors_);
  void* s = kStream;
  cuda::encoder_forward(a.encoded, a.inputs, w.wte, w.wpe, B, T, C, s);
  const float* residual = a.encoded;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const size_t o = (size_t)l * BT;
    float* ln1 = a.ln1 + o * C;
    float* qkv = a.qkv + o * 3 * C;
    float* atty = a.atty + o * C;
    float* lse = a.lse + (size_t)l * B * NH * T;
    float* res2 = a.residual2 + o * C;
    float* ln2 = a.ln2 + o * C;
    float* fch = a.fch + o * 4 * C;
    float* fchg = a.fch_gelu + o * 4 * C;
    float* res3 = a.residual3 + o * C;
    cuda::layernorm_forward(ln1, a.ln1_mean + o, a.ln1_rstd + o, residual, w.ln1w + l * C, w.ln1b + l * C, BT, C, s);
    matmul_forward(qkv, ln1, w.qkvw + (size_t)l * 3 * C * C, w.qkvb + l * 3 * C, BT, C, 3 * C);
    if (a.bf16) {
      uint16_t* qkv_bf = a.qkv_bf + o * 3 * C;
      uint16_t* atty_bf = a.atty_bf + o * C;
      cuda::f32_to_bf16(qkv_bf, qkv, (size_t)BT * 3 * C, s);
      cuda::attention_forward(atty_bf, lse, qkv_bf, B, T, C, NH, /*causal=*/true, s);
      cuda::bf16_to_f32(atty, atty_bf, (size_t)BT * C, s);
    } else {
      cuda::attention_fp32_forward(atty, lse, qkv, B, T, C, NH, s);
    }
    matmul_forward(a.attproj + o * C, atty, w.attprojw + (size_t)l * C * C, w.attprojb + l * C, BT, C, C);
    cuda::residual_forward(res2, residual, a.attproj + o * C, (size_t)BT * C, s);
    cuda::layernorm_forward(ln2, a.ln2_mean + o, a.ln2_rstd + o, res2, w.ln2w + l * C, w.ln2b + l * C, BT, C, s);
    matmul_forward(fch, ln2, w.fcw + (size_t)l * 4 * C * C, w.fcb + l * 4 * C, BT, C, 4 * C);
    cuda::gelu_forward(fchg, fch, (size_t)BT * 4 * C, s);
    matmul_forward(a.fcproj + o * C, fchg, w.fcprojw + (size_t)l * C * 4 * C, w.fcprojb + l * C, BT, 4 * C, C);
    cuda::residual_forward(res3, res2, a.fcproj + o * C, (size_t)BT * C, s);
    residual = res3;
  }
  cuda::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, BT, C, s);
  matmul_forward(a.logits, a.lnf, w.wte, nullptr, BT, C, V);
}

void GPTCuda::backward(int B, int T) {
  Activations& a = *acts_;
  ParamViews w = point(device(Buffer::Params), tensors_);
  ParamViews g = point(device(Buffer::Grads), tensors_);
  const int C = cfg_.channels, NH = cfg_.num_heads, V = cfg_.vocab_size, BT = B * T, L = cfg_.num_layers;
  void* s = kStream;
  auto zero = [&](float* p, size_t n) { CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), raw_stream())); };
  zero(device(Buffer::Grads), num_params_);

  // logits now hold dloss/dlogits (crossentropy wrote them in place).
  zero(a.dln, (size_t)BT * C);
  matmul_backward(a.dln, g.wte, nullptr, a.logits, a.lnf, w.wte, BT, C, V);
  zero(a.dres, (size_t)BT * C);
  const float* last = a.residual3 + (size_t)(L - 1) * BT * C;
  cuda::layernorm_backward(a.dres, g.lnfw, g.lnfb, a.ln_scratch, a.dln, last, w.lnfw, a.lnf_mean, a.lnf_rstd, BT, C,
                           s);

  for (int l = L - 1; l >= 0; --l) {
    const size_t o = (size_t)l * BT;
    const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BT * C;
    const float* lse = a.lse + (size_t)l * B * NH * T;
    // residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
    zero(a.dfch_gelu, (size_t)BT * 4 * C);
    matmul_backward(a.dfch_gelu, g.fcprojw + (size_t)l * C * 4 * C, g.fcprojb + l * C, a.dres, a.fch_gelu + o * 4 * C,
                    w.fcprojw + (size_t)l * C * 4 * C, BT, 4 * C, C);
    zero(a.dfch, (size_t)BT * 4 * C);
    cuda::gelu_backward(a.dfch, a.fch + o * 4 * C, a.dfch_gelu, (size_t)BT * 4 * C, s);
    zero(a.dln, (size_t)BT * C);
    matmul_backward(a.dln, g.fcw + (size_t)l * 4 * C * C, g.fcb + l * 4 * C, a.dfch, a.ln2 + o * C,
                    w.fcw + (size_t)l * 4 * C * C, BT, C, 4 * C);
    CUDA_CHECK(cudaMemcpyAsync(a.dres2, a.dres, (size_t)BT * C * sizeof(float), cudaMemcpyDeviceToDevice,
                               raw_stream()));
    cuda::layernorm_backward(a.dres2, g.ln2w + l * C, g.ln2b + l * C, a.ln_scratch, a.dln, a.residual2 + o * C,
                             w.ln2w + l * C, a.ln2_mean + o, a.ln2_rstd + o, BT, C, s);
    // residual2 = residual + attproj(attention(qkv(ln1(residual))))
    zero(a.datty, (size_t)BT * C);
    matmul_backward(a.datty, g.attprojw + (size_t)l * C * C, g.attprojb + l * C, a.dres2, a.atty + o * C,
                    w.attprojw + (size_t)l * C * C, BT, C, C);
    if (a.bf16) {
      cuda::f32_to_bf16(a.datty_bf, a.datty, (size_t)BT * C, s);
      cuda::attention_backward(a.dqkv_bf, a.delta, a.datty_bf, a.qkv_bf + o * 3 * C, a.atty_bf + o * C, lse, B, T, C,
                               NH, /*causal=*/true, s);
      cuda::bf16_to_f32(a.dqkv, a.dqkv_bf, (size_t)BT * 3 * C, s);
    } else {
      cuda::attention_fp32_backward(a.dqkv, a.delta, a.datty, a.qkv + o * 3 * C, a.atty + o * C, lse, B, T, C, NH, s);
    }
    zero(a.dln, (size_t)BT * C);
    matmul_backward(a.dln, g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, a.dqkv, a.ln1 + o * C,
                    w.qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
    CUDA_CHECK(cudaMemcpyAsync(a.dres, a.dres2, (size_t)BT * C * sizeof(float), cudaMemcpyDeviceToDevice,
                               raw_stream()));
    cuda::layernorm_backward(a.dres, g.ln1w + l * C, g.ln1b + l * C, a.ln_scratch, a.dln, residual, w.ln1w + l * C,
                             a.ln1_mean + o, a.ln1_rstd + o, BT, C, s);
  }
  cuda::encoder_backward(g.wte, g.wpe, a.dres, a.inputs, B, T, C, s);
}

// Mean of losses (N) in double (enqueues the reduction and copies one double back: synchronizes).
double GPTCuda::mean_loss(int N) {
  Activations& a = *acts_;
  cuda::sum_to_double(a.red_result, a.red_scratch, a.losses, (size_t)N, /*squares=*/false, kStream);
  double total = 0.0;
  CUDA_CHECK(cudaMemcpy(&total, a.red_result, sizeof(double), cudaMemcpyDeviceToHost));
  return total / N;
}

float GPTCuda::forward_backward(const int32_t* tokens, int B, int T) {
  split_tokens(tokens, B, T, true);
  forward(B, T);
  const int N = B * T;
  cuda::crossentropy_forward_backward(acts_->logits, acts_->losses, acts_->targets, N, cfg_.vocab_size,
                                      1.f / float(N), kStream);
  const double loss = mean_loss(N);
  backward(B, T);
  CUDA_CHECK(cudaDeviceSynchronize());
  return float(loss);
}

StepResult GPTCuda::train_step(const int32_t* tokens, int B, int T, const AdamWConfig& opt) {
  float loss = forward_backward(tokens, B, T);
  Activations& a = *acts_;
  cuda::sum_to_double(a.red_result, a.red_scratch, device(Buffer::Grads), num_params_, /*squares=*/true, kStream);
  double sq = 0.0;
  CUDA_CHECK(cudaMemcpy(&sq, a.red_result, sizeof(double), cudaMemcpyDeviceToHost));
  float norm = float(std::sqrt(sq));
  // Same rule as GPT::train_step (torch.nn.utils.clip_grad_norm_).
  float scale = 1.f;
  if (opt.grad_clip > 0.f) {
    float coef = opt.grad_clip / (norm + 1e-6f);
    if (coef < 1.f) scale = coef;
  }
  ++adam_t_;
  float* p = device(Buffer::Params);
  float* m = device(Buffer::AdamM);
  float* v = device(Buffer::AdamV);
  const float* gr = device(Buffer::Grads);
  for (const auto& t : tensors_) {
    cuda::adamw_update(p + t.offset, m + t.offset, v + t.offset, gr + t.offset, t.size, opt.lr, opt.beta1, opt.beta2,
                       opt.eps, t.decay ? opt.weight_decay : 0.f, scale, adam_t_, kStream);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  return {loss, norm};
}

float GPTCuda::eval_loss(const int32_t* tokens, int B, int T) {
  split_tokens(tokens, B, T, true);
  forward(B, T);
  const int N = B * T;
  cuda::crossentropy_forward_backward(acts_->logits, acts_->losses, acts_->targets, N, cfg_.vocab_size, 0.f, kStream);
  return float(mean_loss(N));
}

void GPTCuda::logits(float* out, const int32_t* inputs, int B, int T) {
  split_tokens(inputs, B, T, false);
  forward(B, T);
  CUDA_CHECK(cudaMemcpy(out, acts_->logits, sizeof(float) * (size_t)B * T * cfg_.vocab_size, cudaMemcpyDeviceToHost));
}

// The engines' generation loop (generate_tokens, sample_token.h), fed one logits row per token from the device.
std::vector<int32_t> GPTCuda::generate(const std::vector<int32_t>& prompt, int max_new, float temperature, int top_k,
                                       uint64_t seed) {
  const int V = cfg_.vocab_size;
  std::vector<float> row(V);
  return generate_tokens(prompt, max_new, temperature, top_k, seed, cfg_.max_seq_len, V,
                         [&](const int32_t* last, int T) -> const float* {
                           split_tokens(last, 1, T, false);
                           forward(1, T);
                           CUDA_CHECK(cudaMemcpy(row.data(), acts_->logits + (size_t)(T - 1) * V, sizeof(float) * V,
                                                 cudaMemcpyDeviceToHost));
                           return row.data();
                         });
}

}  // namespace covenant

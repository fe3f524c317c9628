// GPT-2 forward, backward and AdamW on the CPU (the numerical reference for every other backend).
// Parameter order (must match src/train/param-layout.ts): wte (V,C) wpe (maxT,C) ln1w ln1b (L,C)
// qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C) attprojb (L,C) ln2w ln2b (L,C) fcw (L,4C,C) fcb (L,4C)
// fcprojw (L,C,4C) fcprojb (L,C) lnfw lnfb (C).
#include "covenant/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "covenant/kernels.h"
#include "covenant/rng.h"
#include "covenant/sha256.h"
#include "covenant/thread_pool.h"
#include "param_views.h"
#include "sample_token.h"
#include "token_rows.h"

namespace covenant {

namespace {

void check_positive(int v, const char* name) {
  if (v <= 0) throw std::invalid_argument(std::string("model.") + name + " must be a positive integer, got " + std::to_string(v));
}

}  // namespace

// Forward activations for one (B, T), and the per-layer gradient scratch reused across layers.
struct GPT::Activations {
  int B = 0, T = 0;
  AttentionKind attention = AttentionKind::Flash;
  SharedFloats mem;
  float *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *lse, *preatt, *att, *attproj, *residual2, *ln2,
      *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
  // backward scratch
  float *dres, *dres2, *dln, *datty, *dqkv, *dfch, *dfch_gelu, *dpreatt, *datt;
};

GPT::GPT(const GPTConfig& cfg, int threads, uint64_t seed) : cfg_(cfg) {
  check_positive(cfg.vocab_size, "vocabSize");
  check_positive(cfg.max_seq_len, "maxSeqLen");
  check_positive(cfg.num_layers, "numLayers");
  check_positive(cfg.num_heads, "numHeads");
  check_positive(cfg.channels, "channels");
  if (cfg.channels % cfg.num_heads != 0)
    throw std::invalid_argument("model.channels (" + std::to_string(cfg.channels) + ") must be divisible by model.numHeads (" + std::to_string(cfg.num_heads) + ")");
  pool_ = std::make_unique<ThreadPool>(threads);
  const size_t V = cfg.vocab_size, maxT = cfg.max_seq_len, L = cfg.num_layers, C = cfg.channels;
  const std::pair<const char*, std::pair<size_t, bool>> spec[16] = {
      {"wte", {V * C, true}},         {"wpe", {maxT * C, true}},     {"ln1w", {L * C, false}},
      {"ln1b", {L * C, false}},       {"qkvw", {L * 3 * C * C, true}}, {"qkvb", {L * 3 * C, false}},
      {"attprojw", {L * C * C, true}}, {"attprojb", {L * C, false}},  {"ln2w", {L * C, false}},
      {"ln2b", {L * C, false}},       {"fcw", {L * 4 * C * C, true}}, {"fcb", {L * 4 * C, false}},
      {"fcprojw", {L * C * 4 * C, true}}, {"fcprojb", {L * C, false}}, {"lnfw", {C, false}},
      {"lnfb", {C, false}}};
  size_t off = 0;
  for (const auto& s : spec) {
    tensors_.push_back({s.first, off, s.second.first, s.second.second});
    off += s.second.first;
  }
  num_params_ = off;
  params_ = alloc_floats(num_params_);
  grads_ = alloc_floats(num_params_);
  m_ = alloc_floats(num_params_);
  v_ = alloc_floats(num_params_);

  // GPT-2 initialization: N(0, 0.02) matrices, 0.01 for wpe, residual projections scaled by 1/sqrt(2L),
  // LayerNorm weights 1, biases 0. Drawn in buffer order from one stream, so a seed fixes every value.
  Rng rng(seed);
  float* p = params_.get();
  const float resid_std = 0.02f / std::sqrt(2.f * cfg.num_layers);
  for (const auto& t : tensors_) {
    std::string name = t.name;
    float* x = p + t.offset;
    if (name == "ln1w" || name == "ln2w" || name == "lnfw") {
      std::fill(x, x + t.size, 1.f);
    } else if (!t.decay) {
      std::fill(x, x + t.size, 0.f);
    } else {
      float std_dev = name == "wpe" ? 0.01f : (name == "attprojw" || name == "fcprojw") ? resid_std : 0.02f;
      for (size_t i = 0; i < t.size; ++i) x[i] = rng.normal() * std_dev;
    }
  }
}

GPT::~GPT() = default;

int GPT::threads() const { return pool_->size(); }

void GPT::ensure_activations(int B, int T) {
  if (acts_ && acts_->B == B && acts_->T == T && acts_->attention == attention_) return;
  const size_t BT = (size_t)B * T, C = cfg_.channels, L = cfg_.num_layers, NH = cfg_.num_heads,
               V = cfg_.vocab_size;
  const bool naive = attention_ == AttentionKind::Naive;
  const size_t TT = naive ? (size_t)B * NH * T * T : 0;
  std::vector<std::pair<float**, size_t>> table;
  auto a = std::make_unique<Activations>();
  table = {{&a->encoded, BT * C},      {&a->ln1, L * BT * C},       {&a->ln1_mean, L * BT},
           {&a->ln1_rstd, L * BT},     {&a->qkv, L * BT * 3 * C},   {&a->atty, L * BT * C},
           {&a->lse, L * B * NH * T},  {&a->preatt, L * TT},        {&a->att, L * TT},
           {&a->attproj, L * BT * C},  {&a->residual2, L * BT * C}, {&a->ln2, L * BT * C},
           {&a->ln2_mean, L * BT},     {&a->ln2_rstd, L * BT},      {&a->fch, L * BT * 4 * C},
           {&a->fch_gelu, L * BT * 4 * C}, {&a->fcproj, L * BT * C}, {&a->residual3, L * BT * C},
           {&a->lnf, BT * C},          {&a->lnf_mean, BT},          {&a->lnf_rstd, BT},
           {&a->logits, BT * V},       {&a->losses, BT},            {&a->dres, BT * C},
           {&a->dres2, BT * C},        {&a->dln, BT * C},           {&a->datty, BT * C},
           {&a->dqkv, BT * 3 * C},     {&a->dfch, BT * 4 * C},      {&a->dfch_gelu, BT * 4 * C},
           {&a->dpreatt, TT},          {&a->datt, TT}};
  size_t total = 0;
  for (auto& e : table) total += (e.second + 15) / 16 * 16;  // keep every tensor 64-byte aligned
  acts_.reset();
  a->mem = alloc_floats(total);
  float* cursor = a->mem.get();
  for (auto& e : table) {
    *e.first = cursor;
    cursor += (e.second + 15) / 16 * 16;
  }
  a->B = B;
  a->T = T;
  a->attention = attention_;
  acts_ = std::move(a);
}

void GPT::split_tokens(const int32_t* tokens, int B, int T, bool with_targets) {
  split_token_rows(tokens, B, T, with_targets, cfg_.max_seq_len, cfg_.vocab_size, inputs_, targets_);
}

void GPT::forward(int B, int T) {
  ensure_activations(B, T);
  Activations& a = *acts_;
  ParamViews w = point(params_.get(), tensors_);
  ThreadPool* pool = pool_.get();
  const int C = cfg_.channels, NH = cfg_.num_heads, V = cfg_.vocab_size, BT = B * T;
  const size_t TT = (size_t)B * NH * T * T;
  encoder_forward(a.encoded, inputs_.data(), w.wte, w.wpe, B, T, C, pool);
  const float* residual = a.encoded;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const size_t o = (size_t)l * BT;
    float* ln1 = a.ln1 + o * C;
    float* qkv = a.qkv + o * 3 * C;
    float* atty = a.atty + o * C;
    float* res2 = a.residual2 + o * C;
    float* ln2 = a.ln2 + o * C;
    float* fch = a.fch + o * 4 * C;
    float* fchg = a.fch_gelu + o * 4 * C;
    float* res3 = a.residual3 + o * C;
    layernorm_forward(ln1, a.ln1_mean + o, a.ln1_rstd + o, residual, w.ln1w + l * C, w.ln1b + l * C, BT, C, pool);
    matmul_forward(qkv, ln1, w.qkvw + (size_t)l * 3 * C * C, w.qkvb + l * 3 * C, BT, C, 3 * C, gemm_, pool);
    if (attention_ == AttentionKind::Flash)
      attention_flash_forward(atty, a.lse + (size_t)l * B * NH * T, qkv, B, T, C, NH, pool);
    else
      attention_naive_forward(atty, a.preatt + l * TT, a.att + l * TT, qkv, B, T, C, NH, pool);
    matmul_forward(a.attproj + o * C, atty, w.attprojw + (size_t)l * C * C, w.attprojb + l * C, BT, C, C, gemm_, pool);
    residual_forward(res2, residual, a.attproj + o * C, (size_t)BT * C, pool);
    layernorm_forward(ln2, a.ln2_mean + o, a.ln2_rstd + o, res2, w.ln2w + l * C, w.ln2b + l * C, BT, C, pool);
    matmul_forward(fch, ln2, w.fcw + (size_t)l * 4 * C * C, w.fcb + l * 4 * C, BT, C, 4 * C, gemm_, pool);
    gelu_forward(fchg, fch, (size_t)BT * 4 * C, pool);
    matmul_forward(a.fcproj + o * C, fchg, w.fcprojw + (size_t)l * C * 4 * C, w.fcprojb + l * C, BT, 4 * C, C, gemm_, pool);
    residual_forward(res3, res2, a.fcproj + o * C, (size_t)BT * C, pool);
    residual = res3;
  }
  layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, w.lnfw, w.lnfb, BT, C, pool);
  matmul_forward(a.logits, a.lnf, w.wte, nullptr, BT, C, V, gemm_, pool);
}

void GPT::backward(int B, int T) {
  Activations& a = *acts_;
  ParamViews w = point(params_.get(), tensors_);
  ParamViews g = point(grads_.get(), tensors_);
  ThreadPool* pool = pool_.get();
  const int C = cfg_.channels, NH = cfg_.num_heads, V = cfg_.vocab_size, BT = B * T, L = cfg_.num_layers;
  const size_t TT = (size_t)B * NH * T * T;
  std::memset(grads_.get(), 0, num_params_ * sizeof(float));
  auto zero = [&](float* p, size_t n) { std::memset(p, 0, n * sizeof(float)); };

  // logits now hold dloss/dlogits (crossentropy wrote them in place).
  zero(a.dln, (size_t)BT * C);
  matmul_backward(a.dln, g.wte, nullptr, a.logits, a.lnf, w.wte, BT, C, V, gemm_, pool);
  zero(a.dres, (size_t)BT * C);
  const float* last = a.residual3 + (size_t)(L - 1) * BT * C;
  layernorm_backward(a.dres, g.lnfw, g.lnfb, a.dln, last, w.lnfw, a.lnf_mean, a.lnf_rstd, BT, C, pool);

  for (int l = L - 1; l >= 0; --l) {
    const size_t o = (size_t)l * BT;
    const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BT * C;
    // residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
    zero(a.dfch_gelu, (size_t)BT * 4 * C);
    matmul_backward(a.dfch_gelu, g.fcprojw + (size_t)l * C * 4 * C, g.fcprojb + l * C, a.dres, a.fch_gelu + o * 4 * C,
                    w.fcprojw + (size_t)l * C * 4 * C, BT, 4 * C, C, gemm_, pool);
    zero(a.dfch, (size_t)BT * 4 * C);
    gelu_backward(a.dfch, a.fch + o * 4 * C, a.dfch_gelu, (size_t)BT * 4 * C, pool);
    zero(a.dln, (size_t)BT * C);
    matmul_backward(a.dln, g.fcw + (size_t)l * 4 * C * C, g.fcb + l * 4 * C, a.dfch, a.ln2 + o * C,
                    w.fcw + (size_t)l * 4 * C * C, BT, C, 4 * C, gemm_, pool);
    std::memcpy(a.dres2, a.dres, (size_t)BT * C * sizeof(float));
    layernorm_backward(a.dres2, g.ln2w + l * C, g.ln2b + l * C, a.dln, a.residual2 + o * C, w.ln2w + l * C,
                       a.ln2_mean + o, a.ln2_rstd + o, BT, C, pool);
    // residual2 = residual + attproj(attention(qkv(ln1(residual))))
    zero(a.datty, (size_t)BT * C);
    matmul_backward(a.datty, g.attprojw + (size_t)l * C * C, g.attprojb + l * C, a.dres2, a.atty + o * C,
                    w.attprojw + (size_t)l * C * C, BT, C, C, gemm_, pool);
    if (attention_ == AttentionKind::Flash)
      attention_flash_backward(a.dqkv, a.datty, a.qkv + o * 3 * C, a.atty + o * C, a.lse + (size_t)l * B * NH * T, B, T,
                               C, NH, pool);
    else
      attention_naive_backward(a.dqkv, a.dpreatt, a.datt, a.datty, a.qkv + o * 3 * C, a.att + l * TT, B, T, C, NH, pool);
    zero(a.dln, (size_t)BT * C);
    matmul_backward(a.dln, g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, a.dqkv, a.ln1 + o * C,
                    w.qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C, gemm_, pool);
    std::memcpy(a.dres, a.dres2, (size_t)BT * C * sizeof(float));
    layernorm_backward(a.dres, g.ln1w + l * C, g.ln1b + l * C, a.dln, residual, w.ln1w + l * C, a.ln1_mean + o,
                       a.ln1_rstd + o, BT, C, pool);
  }
  encoder_backward(g.wte, g.wpe, a.dres, inputs_.data(), B, T, C, pool);
}

float GPT::forward_backward(const int32_t* tokens, int B, int T) {
  split_tokens(tokens, B, T, true);
  forward(B, T);
  double loss = crossentropy_forward_backward(acts_->logits, acts_->losses, targets_.data(), B * T,
                                              cfg_.vocab_size, 1.f / float(B * T), pool_.get());
  backward(B, T);
  return float(loss);
}

StepResult GPT::train_step(const int32_t* tokens, int B, int T, const AdamWConfig& opt) {
  float loss = forward_backward(tokens, B, T);
  float norm = float(std::sqrt(sum_squares(grads_.get(), num_params_, pool_.get())));
  // Same rule as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  float scale = 1.f;
  if (opt.grad_clip > 0.f) {
    float coef = opt.grad_clip / (norm + 1e-6f);
    if (coef < 1.f) scale = coef;
  }
  ++adam_t_;
  for (const auto& t : tensors_) {
    adamw_update(params_.get() + t.offset, m_.get() + t.offset, v_.get() + t.offset, grads_.get() + t.offset, t.size,
                 opt.lr, opt.beta1, opt.beta2, opt.eps, t.decay ? opt.weight_decay : 0.f, scale, adam_t_, pool_.get());
  }
  return {loss, norm};
}

float GPT::eval_loss(const int32_t* tokens, int B, int T) {
  split_tokens(tokens, B, T, true);
  forward(B, T);
  return float(crossentropy_forward_backward(acts_->logits, acts_->losses, targets_.data(), B * T, cfg_.vocab_size,
                                             0.f, pool_.get()));
}

void GPT::logits(float* out, const int32_t* inputs, int B, int T) {
  split_tokens(inputs, B, T, false);
  forward(B, T);
  std::memcpy(out, acts_->logits, sizeof(float) * (size_t)B * T * cfg_.vocab_size);
}

std::vector<int32_t> GPT::generate(const std::vector<int32_t>& prompt, int max_new, float temperature, int top_k,
                                   uint64_t seed) {
  return generate_tokens(prompt, max_new, temperature, top_k, seed, cfg_.max_seq_len, cfg_.vocab_size,
                         [&](const int32_t* last, int T) -> const float* {
                           split_tokens(last, 1, T, false);
                           forward(1, T);
                           return acts_->logits + (size_t)(T - 1) * cfg_.vocab_size;
                         });
}

std::string GPT::params_hash() const { return Sha256::hex(params_.get(), num_params_ * sizeof(float)); }

RoundDelta& GPT::round_delta() {
  if (!delta_) delta_ = std::make_unique<RoundDelta>(num_params_);
  return *delta_;
}

void GPT::mark_round_start() { round_delta().mark(params_.get()); }
void GPT::compress_delta(int8_t* q, float* scales, int block) {
  round_delta().compress(q, scales, params_.get(), block, pool_.get());
}
void GPT::copy_delta_residual(float* out) { round_delta().copy_residual(out); }
void GPT::load_delta_residual(const float* r) { round_delta().load_residual(r); }
void GPT::reset_delta_residual() { round_delta().reset_residual(); }
bool GPT::undo_compress_delta() { return round_delta().undo_compress(); }

}  // namespace covenant

// Native test executable: every kernel against its reference (naive GEMM, naive attention, finite
// differences), plus SHA-256 vectors and determinism. Runs without Node; `npm test` runs it too.
// Usage: covenant_native_tests [filter]   (runs the tests whose name contains filter)
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "covenant/gemm.h"
#include "covenant/gpt.h"
#include "covenant/kernels.h"
#include "covenant/quant.h"
#include "covenant/rng.h"
#include "covenant/sha256.h"
#include "harness.h"
#include "covenant/thread_pool.h"

using namespace covenant;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * scale;
  return v;
}

// max |a-b| / max(1, max|b|)
double rel_max_err(const float* a, const float* b, size_t n, size_t* where = nullptr) {
  double worst = 0, ref = 1;
  for (size_t i = 0; i < n; ++i) ref = std::max(ref, (double)std::fabs(b[i]));
  for (size_t i = 0; i < n; ++i) {
    double e = std::fabs((double)a[i] - b[i]);
    if (std::isnan(a[i]) || e > worst) {
      worst = std::isnan(a[i]) ? INFINITY : e;
      if (where) *where = i;
    }
  }
  return worst / ref;
}

void test_sha256() {
  CHECK(Sha256::hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
  CHECK(Sha256::hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
  std::string m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(Sha256::hex(m.data(), m.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "two blocks");
}

void test_gemm_backend(GemmBackend backend) {
  ThreadPool pool(2);
  const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {13, 33, 17}, {64, 64, 64}, {97, 131, 259}, {128, 300, 70}, {257, 65, 513}, {3, 1000, 40}};
  for (auto& s : shapes) {
    int M = s[0], N = s[1], K = s[2];
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.f, 1.f, 0.5f}) {
          Trans TA = ta ? Trans::T : Trans::N, TB = tb ? Trans::T : Trans::N;
          int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
          auto A = randn((size_t)(ta ? K : M) * lda, 1 + M);
          auto B = randn((size_t)(tb ? N : K) * ldb, 2 + N);
          auto C0 = randn((size_t)M * ldc, 3 + K);
          if (beta == 0.f) for (auto& x : C0) x = NAN;  // beta == 0 must ignore C
          auto Cref = C0, Cout = C0;
          if (beta == 0.f) for (auto& x : Cref) x = 0;
          gemm_ref(TA, TB, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, Cref.data(), ldc);
          gemm(backend, TA, TB, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, Cout.data(), ldc, &pool);
          double worst = 0;
          for (int i = 0; i < M; ++i)
            worst = std::max(worst, rel_max_err(Cout.data() + (size_t)i * ldc, Cref.data() + (size_t)i * ldc, N));
          CHECK(worst < 1e-5 * std::sqrt((double)K), "%s M=%d N=%d K=%d ta=%d tb=%d beta=%g err=%g", gemm_backend_name(backend), M, N, K, ta, tb, beta, worst);
        }
  }
}

void test_gemm_packed() { test_gemm_backend(GemmBackend::Packed); }
void test_gemm_blas() {
  if (!gemm_have_blas()) {
    std::printf("    (skipped: built without BLAS)\n");
    return;
  }
  test_gemm_backend(GemmBackend::Blas);
  // The portable kernel against the BLAS path directly, on training-shaped problems.
  ThreadPool pool(2);
  const int shapes[][3] = {{256, 2304, 768}, {768, 768, 256}, {256, 768, 3072}};
  for (auto& s : shapes) {
    int M = s[0], N = s[1], K = s[2];
    auto A = randn((size_t)M * K, 21), B = randn((size_t)K * N, 22);
    std::vector<float> Cb((size_t)M * N), Cp((size_t)M * N);
    gemm(GemmBackend::Blas, Trans::N, Trans::N, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, Cb.data(), N, &pool);
    gemm(GemmBackend::Packed, Trans::N, Trans::N, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, Cp.data(), N, &pool);
    double e = rel_max_err(Cp.data(), Cb.data(), Cb.size());
    CHECK(e < 1e-5 * std::sqrt((double)K), "packed vs blas M=%d N=%d K=%d err=%g", M, N, K, e);
  }
}

// Attention: flash equals naive in the forward and the backward, on shapes where T is not a multiple of a tile.
void test_attention_flash_vs_naive() {
  ThreadPool pool(2);
  const int shapes[][4] = {{1, 1, 8, 2}, {2, 17, 16, 4}, {1, 64, 32, 2}, {2, 65, 24, 3}, {1, 150, 64, 1}, {3, 33, 48, 4}};
  for (auto& s : shapes) {
    int B = s[0], T = s[1], C = s[2], NH = s[3];
    auto qkv = randn((size_t)B * T * 3 * C, 11 + T, 0.7f);
    auto dout = randn((size_t)B * T * C, 12 + T);
    std::vector<float> out_n((size_t)B * T * C), out_f((size_t)B * T * C, NAN), pre((size_t)B * NH * T * T),
        att((size_t)B * NH * T * T), lse((size_t)B * NH * T), dq_n((size_t)B * T * 3 * C, NAN),
        dq_f((size_t)B * T * 3 * C, NAN), dpre(pre.size()), datt(pre.size());
    attention_naive_forward(out_n.data(), pre.data(), att.data(), qkv.data(), B, T, C, NH, &pool);
    attention_flash_forward(out_f.data(), lse.data(), qkv.data(), B, T, C, NH, &pool);
    double ef = rel_max_err(out_f.data(), out_n.data(), out_f.size());
    CHECK(ef < 1e-5, "forward B=%d T=%d C=%d NH=%d err=%g", B, T, C, NH, ef);
    attention_naive_backward(dq_n.data(), dpre.data(), datt.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH, &pool);
    attention_flash_backward(dq_f.data(), dout.data(), qkv.data(), out_f.data(), lse.data(), B, T, C, NH, &pool);
    double eb = rel_max_err(dq_f.data(), dq_n.data(), dq_f.size());
    CHECK(eb < 1e-4, "backward B=%d T=%d C=%d NH=%d err=%g", B, T, C, NH, eb);
  }
}

// Finite differences: for a layer y = f(x), loss = sum(y * w) with random w; compare the analytic dx with
// the central difference (in float, h = 1e-2 relative; tolerance 2e-3 relative to the largest gradient).
void fd_check(const char* name, std::vector<float>& x, const std::function<void(std::vector<float>&)>& fwd,
              size_t out_n, const std::vector<float>& analytic, int samples = 40) {
  auto w = randn(out_n, 99);
  auto loss = [&]() {
    std::vector<float> y(out_n);
    fwd(y);
    double s = 0;
    for (size_t i = 0; i < out_n; ++i) s += double(y[i]) * w[i];
    return s;
  };
  double gmax = 1e-6;
  for (float g : analytic) gmax = std::max(gmax, (double)std::fabs(g));
  Rng r(7);
  double worst = 0;
  for (int s = 0; s < samples; ++s) {
    size_t i = r.next_u64() % x.size();
    float orig = x[i];
    float h = 1e-2f * std::max(1.f, std::fabs(orig));
    x[i] = orig + h;
    double lp = loss();
    x[i] = orig - h;
    double lm = loss();
    x[i] = orig;
    double num = (lp - lm) / (2.0 * ((double)(orig + h) - (double)orig));
    worst = std::max(worst, std::fabs(num - analytic[i]) / gmax);
  }
  CHECK(worst < 2e-3, "%s: finite-difference error %g (relative to max |grad| %g)", name, worst, gmax);
}

void test_layer_gradients() {
  ThreadPool pool(2);
  const int N = 6, C = 16, OC = 24, B = 2, T = 7, NH = 4;
  auto w = randn(OC, 99);
  {  // layernorm
    auto x = randn(N * C, 1), gw = randn(C, 2, 0.3f), gb = randn(C, 3, 0.3f);
    for (auto& v : gw) v += 1.f;
    std::vector<float> mean(N), rstd(N), y(N * C), dx(N * C, 0.f), dgw(C, 0.f), dgb(C, 0.f);
    auto wout = randn(N * C, 99);
    layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gw.data(), gb.data(), N, C, &pool);
    layernorm_backward(dx.data(), dgw.data(), dgb.data(), wout.data(), x.data(), gw.data(), mean.data(), rstd.data(), N, C, &pool);
    fd_check("layernorm dx", x, [&](std::vector<float>& out) { layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gw.data(), gb.data(), N, C, &pool); }, N * C, dx);
    fd_check("layernorm dweight", gw, [&](std::vector<float>& out) { layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gw.data(), gb.data(), N, C, &pool); }, N * C, dgw);
  }
  {  // matmul
    auto x = randn(N * C, 4), W = randn(OC * C, 5, 0.3f), bias = randn(OC, 6);
    std::vector<float> dx(N * C, 0.f), dW(OC * C, 0.f), db(OC, 0.f);
    auto wout = randn(N * OC, 99);
    matmul_backward(dx.data(), dW.data(), db.data(), wout.data(), x.data(), W.data(), N, C, OC, GemmBackend::Auto, &pool);
    auto f = [&](std::vector<float>& out) { matmul_forward(out.data(), x.data(), W.data(), bias.data(), N, C, OC, GemmBackend::Auto, &pool); };
    fd_check("matmul dinp", x, f, N * OC, dx);
    fd_check("matmul dweight", W, f, N * OC, dW);
    fd_check("matmul dbias", bias, f, N * OC, db);
  }
  {  // gelu
    auto x = randn(N * C, 8, 2.f);
    std::vector<float> dx(N * C, 0.f);
    auto wout = randn(N * C, 99);
    gelu_backward(dx.data(), x.data(), wout.data(), N * C, &pool);
    fd_check("gelu", x, [&](std::vector<float>& out) { gelu_forward(out.data(), x.data(), N * C, &pool); }, N * C, dx);
  }
  {  // attention (flash)
    const int Ca = 16;
    auto qkv = randn(B * T * 3 * Ca, 9, 0.8f);
    std::vector<float> y(B * T * Ca), lse(B * NH * T), dqkv(B * T * 3 * Ca);
    auto wout = randn(B * T * Ca, 99);
    attention_flash_forward(y.data(), lse.data(), qkv.data(), B, T, Ca, NH, &pool);
    attention_flash_backward(dqkv.data(), wout.data(), qkv.data(), y.data(), lse.data(), B, T, Ca, NH, &pool);
    fd_check("attention", qkv, [&](std::vector<float>& out) { attention_flash_forward(out.data(), lse.data(), qkv.data(), B, T, Ca, NH, &pool); }, B * T * Ca, dqkv, 60);
  }
  {  // cross-entropy: d(mean loss)/d(logits)
    const int V = 11, R = 5;
    auto logits = randn(R * V, 10, 2.f);
    std::vector<int32_t> tg = {1, 0, 10, 5, 5};
    std::vector<float> losses(R), d = logits;
    crossentropy_forward_backward(d.data(), losses.data(), tg.data(), R, V, 1.f / R, &pool);
    auto lossf = [&](std::vector<float>& out) {
      std::vector<float> tmp = logits;
      out[0] = (float)crossentropy_forward_backward(tmp.data(), losses.data(), tg.data(), R, V, 0.f, &pool);
    };
    // fd_check weights the output by a random w; scale the analytic gradient by that same w[0].
    auto wout = randn(1, 99);
    for (auto& g : d) g *= wout[0];
    fd_check("crossentropy", logits, lossf, 1, d);
  }
  {  // encoder: dwte
    const int V = 9, Ce = 8;
    std::vector<int32_t> idx = {1, 3, 3, 0, 8, 2, 1, 1, 5, 4, 3, 7, 6, 0};
    auto wte = randn(V * Ce, 12), wpe = randn(T * Ce, 13);
    std::vector<float> dwte(V * Ce, 0.f), dwpe(T * Ce, 0.f);
    auto wout = randn(B * T * Ce, 99);
    encoder_backward(dwte.data(), dwpe.data(), wout.data(), idx.data(), B, T, Ce, &pool);
    auto f = [&](std::vector<float>& out) { encoder_forward(out.data(), idx.data(), wte.data(), wpe.data(), B, T, Ce, &pool); };
    fd_check("encoder dwte", wte, f, B * T * Ce, dwte);
    fd_check("encoder dwpe", wpe, f, B * T * Ce, dwpe);
  }
  (void)w;
}

GPTConfig tiny_cfg() { return GPTConfig{37, 16, 2, 2, 16}; }

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(r.next_u64() % V);
  return t;
}

void test_model_gradient() {
  for (AttentionKind kind : {AttentionKind::Flash, AttentionKind::Naive}) {
    GPT m(tiny_cfg(), 2, 5);
    m.set_attention(kind);
    // larger weights than the GPT-2 init so every path carries signal
    Rng r(3);
    for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] += r.normal() * 0.1f;
    const int B = 2, T = 9;
    auto tok = random_tokens(B * (T + 1), 37, 4);
    m.forward_backward(tok.data(), B, T);
    std::vector<float> g(m.grads(), m.grads() + m.num_params());
    double gmax = 0;
    for (float x : g) gmax = std::max(gmax, (double)std::fabs(x));
    Rng pick(8);
    for (const auto& t : m.tensors()) {
      double worst = 0;
      for (int s = 0; s < 6; ++s) {
        size_t i = t.offset + pick.next_u64() % t.size;
        float orig = m.params()[i];
        const float h = 1e-2f;
        m.params()[i] = orig + h;
        double lp = m.eval_loss(tok.data(), B, T);
        m.params()[i] = orig - h;
        double lm = m.eval_loss(tok.data(), B, T);
        m.params()[i] = orig;
        double num = (lp - lm) / (2.0 * ((double)(orig + h) - (double)orig));
        worst = std::max(worst, std::fabs(num - g[i]) / gmax);
      }
      CHECK(worst < 5e-3, "model %s grad (%s attention): finite-difference error %g of max |grad| %g", t.name, kind == AttentionKind::Flash ? "flash" : "naive", worst, gmax);
    }
  }
}

void test_model_flash_equals_naive_training() {
  GPT a(tiny_cfg(), 2, 9), b(tiny_cfg(), 2, 9);
  b.set_attention(AttentionKind::Naive);
  const int B = 3, T = 13;
  AdamWConfig opt;
  opt.lr = 1e-2f;
  for (int s = 0; s < 5; ++s) {
    auto tok = random_tokens(B * (T + 1), 37, 100 + s);
    auto ra = a.train_step(tok.data(), B, T, opt);
    auto rb = b.train_step(tok.data(), B, T, opt);
    CHECK(std::fabs(ra.loss - rb.loss) < 1e-4 * std::fabs(rb.loss), "step %d loss flash %g naive %g", s, ra.loss, rb.loss);
  }
  double e = rel_max_err(a.params(), b.params(), a.num_params());
  CHECK(e < 1e-4, "params after 5 steps differ by %g", e);
}

void test_determinism() {
  for (int threads : {1, 2}) {
    std::string h[2];
    for (int run = 0; run < 2; ++run) {
      GPT m(tiny_cfg(), threads, 42);
      AdamWConfig opt;
      for (int s = 0; s < 3; ++s) {
        auto tok = random_tokens(2 * 17, 37, s);
        m.train_step(tok.data(), 2, 16, opt);
      }
      h[run] = m.params_hash();
    }
    CHECK(h[0] == h[1], "threads=%d: same seed gave hashes %s and %s", threads, h[0].c_str(), h[1].c_str());
  }
  GPT x(tiny_cfg(), 1, 1), y(tiny_cfg(), 1, 2);
  CHECK(x.params_hash() != y.params_hash(), "different seeds gave the same parameters");
}

void test_bad_input() {
  GPT m(tiny_cfg(), 1, 1);
  std::vector<int32_t> tok(2 * 5, 0);
  tok[3] = 37;
  bool threw = false;
  try { m.forward_backward(tok.data(), 2, 4); } catch (const std::out_of_range&) { threw = true; }
  CHECK(threw, "token id == V must be refused");
  threw = false;
  try { m.eval_loss(tok.data(), 1, 17); } catch (const std::invalid_argument&) { threw = true; }
  CHECK(threw, "T > maxT must be refused");
  threw = false;
  try { GPT bad(GPTConfig{10, 8, 1, 3, 16}, 1, 1); } catch (const std::invalid_argument&) { threw = true; }
  CHECK(threw, "channels not divisible by heads must be refused");
}

void test_training_lowers_loss() {
  GPT m(tiny_cfg(), 2, 3);
  AdamWConfig opt;
  opt.lr = 3e-3f;
  // a learnable pattern: each row counts upward modulo V from a random start
  Rng r(1);
  auto batch = [&]() {
    std::vector<int32_t> t(4 * 17);
    for (int b = 0; b < 4; ++b) {
      int s = int(r.next_u64() % 37);
      for (int i = 0; i < 17; ++i) t[b * 17 + i] = (s + i) % 37;
    }
    return t;
  };
  auto first = batch();
  float start = m.eval_loss(first.data(), 4, 16);
  for (int s = 0; s < 150; ++s) {
    auto t = batch();
    m.train_step(t.data(), 4, 16, opt);
  }
  float end = m.eval_loss(first.data(), 4, 16);
  CHECK(end < 0.3f * start, "loss went from %g to %g", start, end);
}

// ---- int8 quantization (native/quant) ----
// Every vector ISA the CPU has against the scalar _ref, bit for bit; the error bound of quant.h; all-zero and
// flushed blocks; non-finite input refused with the first bad index; thread counts; the error-feedback
// compressor (identity with quantize-then-subtract, all-or-nothing refusal, convergence of the mean).

std::vector<QuantIsa> quant_isas() {
  std::vector<QuantIsa> out;
  for (QuantIsa isa : {QuantIsa::Scalar, QuantIsa::Avx2, QuantIsa::Avx512})
    if (quant_isa_supported(isa)) out.push_back(isa);
  return out;
}

// Gaussian values with per-block magnitudes spread over 1e-3..1e3, a few outliers, whole zero blocks and
// a few exact zeros: the cases a pseudo-gradient has.
std::vector<float> quant_data(size_t n, int block, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  float mag = 1.f;
  for (size_t i = 0; i < n; ++i) {
    if (i % block == 0) mag = std::pow(10.f, 6.f * r.uniform() - 3.f);
    float x = r.normal() * mag;
    uint64_t u = r.next_u64() % 1000;
    if (u == 0) x *= 50.f;
    if (u == 1) x = 0.f;
    v[i] = x;
  }
  for (size_t b = 3; b * block < n; b += 11)
    for (size_t i = b * block; i < std::min(n, (b + 1) * block); ++i) v[i] = (b % 2) ? 0.f : -0.f;
  return v;
}

bool same_bits(const void* a, const void* b, size_t bytes) { return bytes == 0 || std::memcmp(a, b, bytes) == 0; }

size_t first_diff_f(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) return i;
  return n;
}

std::vector<size_t> quant_sizes(int block) {
  std::vector<size_t> s = {0, 1, 7, (size_t)block, (size_t)block + 1, 3 * (size_t)block + 5, 100003, 1000037};
  if (block > 1) s.push_back((size_t)block - 1);
  return s;
}

void test_quant_vs_ref() {
  ThreadPool pool(2);
  for (QuantIsa isa : quant_isas())
    for (int block : {1, 7, 16, 32, 64, 100, 128, 256, 1024}) {
      for (size_t n : quant_sizes(block)) {
        if (n > 200000 && block != 64 && block != 7) continue;  // the large sizes with two blocks keep it quick
        auto x = quant_data(n, block, 7 * n + block);
        const size_t nb = quant_num_blocks(n, block);
        std::vector<int8_t> q(n), qr(n);
        std::vector<float> s(nb), sr(nb);
        quantize_int8(q.data(), s.data(), x.data(), n, block, &pool, isa);
        quantize_int8_ref(qr.data(), sr.data(), x.data(), n, block);
        CHECK(same_bits(q.data(), qr.data(), n), "%s block=%d n=%zu: codes differ from _ref", quant_isa_name(isa), block, n);
        CHECK(same_bits(s.data(), sr.data(), nb * 4), "%s block=%d n=%zu: scales differ from _ref", quant_isa_name(isa), block, n);

        std::vector<float> d(n), dr(n);
        dequantize_int8(d.data(), q.data(), s.data(), n, block, &pool, isa);
        dequantize_int8_ref(dr.data(), qr.data(), sr.data(), n, block);
        size_t at = first_diff_f(d.data(), dr.data(), n);
        CHECK(at == n, "%s block=%d n=%zu: dequantize differs from _ref at %zu", quant_isa_name(isa), block, n, at);
        // Streaming stores, into outputs at every 4-byte offset from a 64-byte line (the aligned groups then
        // straddle blocks differently).
        for (size_t shift : {size_t(0), size_t(1), size_t(5), size_t(15)}) {
          std::vector<float> ds(n + 32);
          float* out = ds.data() + (16 - (reinterpret_cast<uintptr_t>(ds.data()) / 4) % 16) % 16 + shift;
          dequantize_int8_streaming(out, q.data(), s.data(), n, block, &pool, isa);
          at = first_diff_f(out, dr.data(), n);
          CHECK(at == n, "%s block=%d n=%zu shift %zu: dequantize_int8_streaming differs from _ref at %zu", quant_isa_name(isa), block, n,
                shift, at);
        }

        auto acc0 = randn(n, 99 + n);
        auto acc = acc0, accr = acc0, sum = acc0;
        dequantize_accumulate_int8(acc.data(), q.data(), s.data(), n, block, &pool, isa);
        dequantize_accumulate_int8_ref(accr.data(), qr.data(), sr.data(), n, block);
        for (size_t i = 0; i < n; ++i) sum[i] = sum[i] + dr[i];
        at = first_diff_f(acc.data(), accr.data(), n);
        CHECK(at == n, "%s block=%d n=%zu: dequantize_accumulate differs from _ref at %zu", quant_isa_name(isa), block, n, at);
        at = first_diff_f(acc.data(), sum.data(), n);
        CHECK(at == n, "%s block=%d n=%zu: dequantize_accumulate differs from dequantize-then-add at %zu",
              quant_isa_name(isa), block, n, at);
      }
    }
}

// |x - dequant(quant(x))| <= scale * (1/2 + 2^-16) per element (quant.h); codes in [-127, 127]; the absmax
// element of every block with scale > 0 gets code +-127.
void test_quant_error_bound() {
  ThreadPool pool(2);
  const int block = 64;
  std::vector<std::vector<float>> cases;
  cases.push_back(quant_data(64 * 1000 + 17, block, 5));
  // Magnitude extremes: near FLT_MAX (the scale steps down so 127*scale stays finite), near FLT_MIN*127
  // (normal scale), subnormal input with a normal absmax.
  std::vector<float> ext = randn(64 * 6, 6);
  for (int i = 0; i < 64; ++i) ext[i] = (i % 2 ? -1.f : 1.f) * FLT_MAX * (1.f - 0.01f * (i % 7));
  ext[0] = FLT_MAX;
  for (int i = 64; i < 128; ++i) ext[i] *= 127.f * FLT_MIN * 4.f;
  for (int i = 128; i < 192; ++i) ext[i] = i == 128 ? 1.f : ext[i] * 1e-40f;
  cases.push_back(ext);
  for (QuantIsa isa : quant_isas())
    for (auto& x : cases) {
      const size_t n = x.size(), nb = quant_num_blocks(n, block);
      std::vector<int8_t> q(n);
      std::vector<float> s(nb), d(n);
      quantize_int8(q.data(), s.data(), x.data(), n, block, &pool, isa);
      dequantize_int8(d.data(), q.data(), s.data(), n, block, &pool, isa);
      int bad = 0;
      for (size_t b = 0; b < nb; ++b) {
        float absmax = 0;
        size_t e = std::min(n, (b + 1) * block);
        for (size_t i = b * block; i < e; ++i) absmax = std::max(absmax, std::fabs(x[i]));
        CHECK(s[b] == quant_scale(absmax), "block %zu: scale %g but quant_scale(absmax %g) = %g", b, s[b], absmax, quant_scale(absmax));
        bool has127 = false;
        for (size_t i = b * block; i < e; ++i) {
          double err = std::fabs((double)x[i] - (double)d[i]);
          double bound = s[b] > 0 ? (double)s[b] * (0.5 + std::ldexp(1.0, -16)) : (double)absmax;
          if (!(err <= bound) && bad++ < 3)
            CHECK(false, "%s x[%zu]=%g: |x - dequant| = %g > bound %g (scale %g)", quant_isa_name(isa), i, x[i], err, bound, s[b]);
          if (q[i] < -127 || q[i] > 127) CHECK(false, "code %d out of range at %zu", q[i], i);
          if (std::fabs(x[i]) == absmax && (q[i] == 127 || q[i] == -127)) has127 = true;
          if (!std::isfinite(d[i])) CHECK(false, "dequantized x[%zu] = %g is not finite", i, d[i]);
        }
        CHECK(s[b] == 0 || has127, "block %zu: the absmax element did not get code +-127", b);
      }
    }
}

void test_quant_round_half_even() {
  // absmax 127 gives scale 1 exactly, so x is its own code before rounding.
  std::vector<float> x = {127.f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.49999f, -126.5f, 125.5f, 0.f, -0.f,
                          0.50001f, 7.5f, 8.5f, -3.5f};
  const int8_t want[] = {127, 0, 2, 2, 0, -2, -2, 3, -126, 126, 0, 0, 1, 8, 8, -4};
  for (QuantIsa isa : quant_isas()) {
    std::vector<int8_t> q(x.size());
    float s = -1;
    quantize_int8(q.data(), &s, x.data(), x.size(), 16, nullptr, isa);
    CHECK(s == 1.f, "%s: scale %g, expected 1", quant_isa_name(isa), s);
    for (size_t i = 0; i < x.size(); ++i)
      CHECK(q[i] == want[i], "%s: code of %g is %d, expected %d (round half to even)", quant_isa_name(isa), x[i], q[i], want[i]);
  }
}

void test_quant_zero_blocks() {
  for (QuantIsa isa : quant_isas()) {
    const int block = 32;
    std::vector<float> x(block * 3 + 5, 0.f);
    for (int i = 0; i < block; ++i) x[i] = (i % 3) ? 0.f : -0.f;
    for (int i = block; i < 2 * block; ++i) x[i] = (i % 2 ? 1.f : -1.f) * 1e-37f;  // absmax/127 below FLT_MIN: flushed
    x[2 * block + 3] = 2.f;
    std::vector<int8_t> q(x.size(), 55);
    std::vector<float> s(4, -1.f), d(x.size(), 9.f);
    quantize_int8(q.data(), s.data(), x.data(), x.size(), block, nullptr, isa);
    CHECK(s[0] == 0.f && !std::signbit(s[0]), "%s: all-zero block has scale %g", quant_isa_name(isa), s[0]);
    CHECK(s[1] == 0.f, "%s: tiny block (absmax 1e-37) should be flushed, scale %g", quant_isa_name(isa), s[1]);
    CHECK(s[2] == quant_scale(2.f) && s[3] == 0.f, "%s: scales %g %g", quant_isa_name(isa), s[2], s[3]);
    for (int i = 0; i < 2 * block; ++i) CHECK(q[i] == 0, "%s: code %d at %d of a zero/flushed block", quant_isa_name(isa), q[i], i);
    for (size_t i = 3 * block; i < x.size(); ++i) CHECK(q[i] == 0, "%s: code %d at %zu", quant_isa_name(isa), q[i], i);
    dequantize_int8(d.data(), q.data(), s.data(), x.size(), block, nullptr, isa);
    for (int i = 0; i < 2 * block; ++i) CHECK(d[i] == 0.f, "%s: dequantized %g at %d", quant_isa_name(isa), d[i], i);
    CHECK(d[2 * block + 3] == 2.f, "%s: absmax element dequantized to %g, expected 2", quant_isa_name(isa), d[2 * block + 3]);
  }
}

void test_quant_nonfinite() {
  ThreadPool pool(2);
  const size_t n = 300007;
  const int block = 64;
  struct Bad {
    std::vector<size_t> at;
    float v;
  };
  const Bad cases[] = {{{0}, NAN}, {{n - 1}, INFINITY}, {{n / 2 + 3, n - 5}, -INFINITY}, {{250001, 70}, NAN},
                       {{64 * 3 + 63}, INFINITY}, {{200000, 200001}, -NAN}};
  for (QuantIsa isa : quant_isas())
    for (ThreadPool* p : {(ThreadPool*)nullptr, &pool})
      for (const Bad& c : cases) {
        auto x = randn(n, 3);
        for (size_t i : c.at) x[i] = c.v;
        size_t want = *std::min_element(c.at.begin(), c.at.end());
        std::vector<int8_t> q(n);
        std::vector<float> s(quant_num_blocks(n, block));
        size_t got = SIZE_MAX;
        try {
          quantize_int8(q.data(), s.data(), x.data(), n, block, p, isa);
        } catch (const NonFiniteError& e) {
          got = e.index();
          CHECK(std::string(e.what()).find("x[" + std::to_string(want) + "]") != std::string::npos, "message: %s", e.what());
        }
        CHECK(got == want, "%s threads=%d: first non-finite at %zu reported as %zu", quant_isa_name(isa), p ? 2 : 1, want, got);
        got = SIZE_MAX;
        try {
          quantize_int8_ref(q.data(), s.data(), x.data(), n, block);
        } catch (const NonFiniteError& e) {
          got = e.index();
        }
        CHECK(got == want, "_ref: first non-finite at %zu reported as %zu", want, got);
      }
  // Bad scales are refused before anything is written.
  std::vector<int8_t> q(100, 3);
  for (float bad : {-1.f, NAN, INFINITY}) {
    std::vector<float> s = {1.f, bad}, acc(100, 5.f);
    bool threw = false;
    try {
      dequantize_accumulate_int8(acc.data(), q.data(), s.data(), 100, 64, nullptr);
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).find("scales[1]") != std::string::npos;
    }
    CHECK(threw, "scale %g must be refused naming scales[1]", bad);
    CHECK(acc[0] == 5.f, "acc must be untouched when a scale is refused");
  }
  bool threw = false;
  try {
    quant_num_blocks(10, 0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "block 0 must be refused");
}

void test_quant_threads() {
  const size_t n = 2000003;
  const int block = 128;
  auto x = quant_data(n, block, 11);
  const size_t nb = quant_num_blocks(n, block);
  std::vector<int8_t> q1(n);
  std::vector<float> s1(nb), d1(n), a1 = randn(n, 12);
  quantize_int8(q1.data(), s1.data(), x.data(), n, block, nullptr);
  dequantize_int8(d1.data(), q1.data(), s1.data(), n, block, nullptr);
  dequantize_accumulate_int8(a1.data(), q1.data(), s1.data(), n, block, nullptr);
  ErrorFeedbackCompressor c1(n, block);
  std::vector<int8_t> cq1(n);
  std::vector<float> cs1(nb);
  for (int r = 0; r < 2; ++r) c1.compress(cq1.data(), cs1.data(), x.data(), nullptr);
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    std::vector<int8_t> q(n);
    std::vector<float> s(nb), d(n), a = randn(n, 12);
    quantize_int8(q.data(), s.data(), x.data(), n, block, &pool);
    dequantize_int8(d.data(), q.data(), s.data(), n, block, &pool);
    dequantize_accumulate_int8(a.data(), q.data(), s.data(), n, block, &pool);
    CHECK(same_bits(q.data(), q1.data(), n) && same_bits(s.data(), s1.data(), nb * 4), "threads=%d: quantize differs from 1 thread", threads);
    CHECK(same_bits(d.data(), d1.data(), n * 4), "threads=%d: dequantize differs from 1 thread", threads);
    CHECK(same_bits(a.data(), a1.data(), n * 4), "threads=%d: dequantize_accumulate differs from 1 thread", threads);
    ErrorFeedbackCompressor c(n, block);
    std::vector<int8_t> cq(n);
    std::vector<float> cs(nb);
    for (int r = 0; r < 2; ++r) c.compress(cq.data(), cs.data(), x.data(), &pool);
    CHECK(same_bits(cq.data(), cq1.data(), n) && same_bits(cs.data(), cs1.data(), nb * 4) &&
              same_bits(c.residual(), c1.residual(), n * 4),
          "threads=%d: compressor differs from 1 thread", threads);
  }
}

void test_quant_layout() {
  CHECK(quantized_bytes(0, 64) == 0, "0 elements");
  CHECK(quantized_bytes(1, 64) == 5, "1 element: 1 code + 1 scale");
  CHECK(quantized_bytes(128, 64) == 136, "two full blocks");
  CHECK(quantized_bytes(129, 64) == 141, "a partial third block");
  Int8SliceLayout l = int8_slice_layout(1000, 128);
  CHECK(l.codes_offset == 0 && l.codes_bytes == 1000 && l.scales_offset == 1000 && l.scales_bytes == 32 && l.total_bytes == 1032,
        "layout of 1000 elements, block 128");
  CHECK(quant_scale(127.f) == 1.f && quant_scale(0.f) == 0.f, "quant_scale");
  CHECK(std::isfinite(127.f * quant_scale(FLT_MAX)), "127 * scale of FLT_MAX must stay finite");
}

// The compressor equals quantize(v) and v - dequantize(q) built from the reference kernels; it refuses
// non-finite input and overflowing sums without touching the residual; load/reset; and over R rounds of
// the same x the dequantized outputs sum to R*x - residual_R, so |mean - x| <= |residual_R| / R.
void test_error_feedback() {
  ThreadPool pool(2);
  const int block = 64;
  for (QuantIsa isa : quant_isas())
    for (size_t n : {(size_t)0, (size_t)1, (size_t)63, (size_t)65, (size_t)100003}) {
      const size_t nb = quant_num_blocks(n, block);
      ErrorFeedbackCompressor c(n, block);
      std::vector<float> r(n, 0.f);
      std::vector<int8_t> q(n), qr(n);
      std::vector<float> s(nb), sr(nb), v(n), d(n);
      for (int round = 0; round < 3; ++round) {
        auto x = quant_data(n, block, 40 + round);
        c.compress(q.data(), s.data(), x.data(), &pool, isa);
        for (size_t i = 0; i < n; ++i) v[i] = x[i] + r[i];
        quantize_int8_ref(qr.data(), sr.data(), v.data(), n, block);
        dequantize_int8_ref(d.data(), qr.data(), sr.data(), n, block);
        for (size_t i = 0; i < n; ++i) r[i] = v[i] - d[i];
        CHECK(same_bits(q.data(), qr.data(), n) && same_bits(s.data(), sr.data(), nb * 4),
              "%s n=%zu round %d: compress codes/scales differ from quantize(input + residual)", quant_isa_name(isa), n, round);
        size_t at = first_diff_f(c.residual(), r.data(), n);
        CHECK(at == n, "%s n=%zu round %d: residual differs from v - dequant at %zu", quant_isa_name(isa), n, round, at);
      }
    }

  // All-or-nothing refusal.
  const size_t n = 100003;
  const size_t nb = quant_num_blocks(n, block);
  ErrorFeedbackCompressor c(n, block);
  std::vector<int8_t> q(n);
  std::vector<float> s(nb);
  auto x = randn(n, 50);
  c.compress(q.data(), s.data(), x.data(), &pool);
  std::vector<float> before(c.residual(), c.residual() + n);
  auto bad = x;
  bad[70001] = NAN;
  bad[90000] = INFINITY;
  size_t got = SIZE_MAX;
  try {
    c.compress(q.data(), s.data(), bad.data(), &pool);
  } catch (const NonFiniteError& e) {
    got = e.index();
    CHECK(!e.sum_overflow(), "NaN input is not an overflow");
  }
  CHECK(got == 70001, "non-finite input reported at %zu, expected 70001", got);
  CHECK(same_bits(c.residual(), before.data(), n * 4), "the residual changed although compress refused its input");
  // A finite input whose sum with the residual overflows.
  std::vector<float> big(n, 1.f), rr(n, 0.f);
  rr[5] = FLT_MAX;
  big[5] = FLT_MAX;
  c.load_residual(rr.data());
  got = SIZE_MAX;
  bool overflow = false;
  try {
    c.compress(q.data(), s.data(), big.data(), &pool);
  } catch (const NonFiniteError& e) {
    got = e.index();
    overflow = e.sum_overflow();
  }
  CHECK(got == 5 && overflow, "overflowing sum reported at %zu (overflow %d), expected 5", got, overflow);
  CHECK(same_bits(c.residual(), rr.data(), n * 4), "the residual changed although compress refused an overflowing sum");
  rr[7] = NAN;
  bool refused = false;
  try {
    c.load_residual(rr.data());
  } catch (const NonFiniteError& e) {
    refused = e.index() == 7;
  }
  CHECK(refused, "load_residual must refuse a NaN naming index 7");
  CHECK(c.residual()[5] == FLT_MAX && c.residual()[7] == 0.f, "a refused load_residual changed the residual");
  c.reset();
  CHECK(std::all_of(c.residual(), c.residual() + n, [](float v) { return v == 0.f; }), "reset leaves zeros");

  // Convergence of the mean: sum over R rounds of dequant = R*x - residual_R (up to fp32 rounding), and
  // |residual_R| <= scale * (1/2 + 2^-16) with scale that of x + residual, so |mean - x| <= ~scale/(2R).
  const int R = 200;
  auto x2 = randn(4096 + 7, 60);
  const size_t n2 = x2.size(), nb2 = quant_num_blocks(n2, block);
  ErrorFeedbackCompressor c2(n2, block);
  std::vector<int8_t> q2(n2);
  std::vector<float> s2(nb2), d2(n2);
  std::vector<double> sum(n2, 0.0);
  std::vector<float> smax(nb2, 0.f);
  for (int round = 0; round < R; ++round) {
    c2.compress(q2.data(), s2.data(), x2.data(), &pool);
    dequantize_int8(d2.data(), q2.data(), s2.data(), n2, block, &pool);
    for (size_t i = 0; i < n2; ++i) sum[i] += d2[i];
    for (size_t b = 0; b < nb2; ++b) smax[b] = std::max(smax[b], s2[b]);
  }
  double worst = 0;
  for (size_t i = 0; i < n2; ++i) {
    double err = std::fabs(sum[i] / R - x2[i]);
    // |residual_R| <= scale/2 (+2^-16 scale), plus fp32 rounding of x + r and v - dequant each round (one
    // ulp of the block's magnitude, about 127 * scale * 2^-24, per round, over R rounds, divided by R).
    double bound = smax[i / block] * (0.5 + std::ldexp(1.0, -16)) / R + 2 * 127.0 * smax[i / block] * std::ldexp(1.0, -24);
    worst = std::max(worst, err / bound);
    if (err > bound) {
      CHECK(false, "x[%zu]: |mean of %d rounds - x| = %g > bound %g", i, R, err, bound);
      break;
    }
  }
  std::printf("    error feedback: max |mean - x| over %d rounds is %.3g of its bound\n", R, worst);
}

}  // namespace

int main(int argc, char** argv) {
  const covenant_test::Test tests[] = {
      {"sha256", test_sha256},
      {"gemm_packed", test_gemm_packed},
      {"gemm_blas", test_gemm_blas},
      {"attention_flash_vs_naive", test_attention_flash_vs_naive},
      {"layer_gradients", test_layer_gradients},
      {"model_gradient", test_model_gradient},
      {"model_flash_equals_naive_training", test_model_flash_equals_naive_training},
      {"determinism", test_determinism},
      {"bad_input", test_bad_input},
      {"training_lowers_loss", test_training_lowers_loss},
      {"quant_vs_ref", test_quant_vs_ref},
      {"quant_error_bound", test_quant_error_bound},
      {"quant_round_half_even", test_quant_round_half_even},
      {"quant_zero_blocks", test_quant_zero_blocks},
      {"quant_nonfinite", test_quant_nonfinite},
      {"quant_threads", test_quant_threads},
      {"quant_layout", test_quant_layout},
      {"quant_error_feedback", test_error_feedback},
  };
  std::printf("covenant native tests (packed GEMM ISA: %s; BLAS: %s)\n", gemm_packed_isa(), gemm_blas_info().c_str());
  return covenant_test::run_tests(tests, argc, argv);
}

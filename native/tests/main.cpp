// Native test executable: every kernel against its reference (naive GEMM, naive attention, finite
// differences), plus SHA-256 vectors and determinism. Runs without Node; `npm test` runs it too.
// Usage: covenant_native_tests [filter]   (runs the tests whose name contains filter)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "covenant/gemm.h"
#include "covenant/gpt.h"
#include "covenant/kernels.h"
#include "covenant/rng.h"
#include "covenant/sha256.h"
#include "covenant/thread_pool.h"

using namespace covenant;

namespace {

int g_failed = 0, g_checks = 0;

#define CHECK(cond, ...)                                      \
  do {                                                        \
    ++g_checks;                                               \
    if (!(cond)) {                                            \
      ++g_failed;                                             \
      std::printf("    FAIL %s:%d: ", __FILE__, __LINE__);    \
      std::printf(__VA_ARGS__);                               \
      std::printf("\n");                                      \
    }                                                         \
  } while (0)

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

struct Test {
  const char* name;
  void (*fn)();
};

}  // namespace

int main(int argc, char** argv) {
  const Test tests[] = {
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
  };
  const char* filter = argc > 1 ? argv[1] : "";
  std::printf("covenant native tests (packed GEMM ISA: %s; BLAS: %s)\n", gemm_packed_isa(), gemm_blas_info().c_str());
  int passed = 0, failed = 0;
  for (const auto& t : tests) {
    if (!std::strstr(t.name, filter)) continue;
    int before = g_failed;
    try {
      t.fn();
    } catch (const std::exception& e) {
      ++g_failed;
      std::printf("    FAIL: uncaught exception: %s\n", e.what());
    }
    bool ok = g_failed == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", t.name);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

// covenant_native_bench: the native half of `npm run bench` (bench/run.ts drives it). Each subcommand checks
// the kernels it times against their reference first, then prints one JSON object per line (a row) on
// stdout; progress and errors go to stderr.
//
//   covenant_native_bench info
//   covenant_native_bench peak      [--threads N] [--min-seconds S]
//   covenant_native_bench gemm      [--sizes 256,512,1024,2048] [--threads N] [--blas-only] [--no-shapes]
//                                   [--min-seconds S]
//   covenant_native_bench attention [--threads N] [--T 64,256,1024] [--B 4] [--C 768] [--NH 12] [--min-seconds S]
//   covenant_native_bench quant     [--threads N] [--mib 64] [--blocks 32,64,128,256,1024] [--min-seconds S]
//   covenant_native_bench tcp       [--mib 1024] [--chunk-kib 1024] [--reps 3] [--host 127.0.0.1]
//
// tcp: single-stream TCP bandwidth, the limit of the all-reduce bench: one sender thread to one receiver
// thread over host (loopback by default) with the all-reduce's own socket code (native/comm/socket.cpp:
// TCP_NODELAY, 4 MiB buffers, non-blocking send/recv loops with poll), moving --mib MiB per rep in
// --chunk-kib writes; one untimed warm-up rep whose bytes are checked, then --reps timed reps. cores_busy =
// CPU seconds of both threads (user + system, the kernel's copies included) over wall seconds.
//
// Timing: one untimed warm-up call, then repetitions until at least --min-seconds (default 0.3 s) and at
// least 3 reps; `seconds` is the median rep, `seconds_min` the fastest.
//
// FLOP conventions: GEMM 2*M*N*K. Causal attention forward 4*B*NH*T^2*hs/2 = 2*B*NH*T^2*hs (the two
// (T,T,hs) matmuls, half of them masked away); backward 2.5x the forward (five matmuls against two), so
// forward+backward = 3.5x the forward. Softmax and exp are not counted.
#include <immintrin.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "covenant/crc32c.h"
#include "covenant/gemm.h"
#include "covenant/kernels.h"
#include "covenant/quant.h"
#include "covenant/rng.h"
#include "covenant/thread_pool.h"
#include "../comm/socket.h"
#include "bench_io.h"

using namespace covenant;
using namespace covenant::bench;

namespace {

// ---------------------------------------------------------------------------------------------------------
// Timing and environment.

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Timing {
  double median = 0, min = 0;
  int reps = 0;
};

// One warm-up call, then reps until both min_seconds of timed work and min_reps are reached.
Timing time_it(const std::function<void()>& fn, double min_seconds, int min_reps = 3, int max_reps = 10000) {
  fn();
  std::vector<double> ts;
  double total = 0;
  while ((total < min_seconds || (int)ts.size() < min_reps) && (int)ts.size() < max_reps) {
    auto t0 = Clock::now();
    fn();
    double dt = since(t0);
    ts.push_back(dt);
    total += dt;
  }
  std::vector<double> sorted = ts;
  std::sort(sorted.begin(), sorted.end());
  size_t n = sorted.size();
  Timing t;
  t.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  t.min = sorted[0];
  t.reps = (int)n;
  return t;
}

// "unset" when neither variable is set, else e.g. "OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=unset".
std::string openblas_env() {
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
  if (!core && !l2) return "unset";
  return std::string("OPENBLAS_CORETYPE=") + (core ? core : "unset") + " OPENBLAS_L2_SIZE=" + (l2 ? l2 : "unset");
}

// The OpenBLAS kernel name out of gemm_blas_info() ("OpenBLAS core=Zen config=..."), else the whole info.
std::string blas_core() {
  std::string info = gemm_blas_info();
  size_t p = info.find("core=");
  if (p == std::string::npos) return info;
  p += 5;
  size_t e = info.find(' ', p);
  return info.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * scale;
  return v;
}

// max |a-b| / max(1, max|b|); NaN in a counts as infinitely wrong.
double rel_max_err(const float* a, const float* b, size_t n) {
  double worst = 0, ref = 1;
  for (size_t i = 0; i < n; ++i) ref = std::max(ref, (double)std::fabs(b[i]));
  for (size_t i = 0; i < n; ++i) {
    double e = std::isnan(a[i]) ? INFINITY : std::fabs((double)a[i] - b[i]);
    worst = std::max(worst, e);
  }
  return worst / ref;
}

int default_threads() { return ThreadPool::hardware_threads(); }

// ---------------------------------------------------------------------------------------------------------
// info: what this binary was built with, for the bench's machine record.

int cmd_info() {
  Row()
      .str("kind", "info")
      .boolean("have_blas", gemm_have_blas())
      .str("blas_info", gemm_blas_info())
      .str("blas_core", gemm_have_blas() ? blas_core() : "none")
      .str("packed_isa", gemm_packed_isa())
      .str("gemm_default", gemm_backend_name(gemm_default_backend()))
      .str("crc32c", crc32c_impl_name(Crc32cImpl::Auto))
      .integer("hardware_threads", ThreadPool::hardware_threads())
      .str("openblas_env", openblas_env())
      .print();
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// peak: fp32 FMA throughput. Each thread runs `chains` independent accumulator chains of x = x*a + b, more
// than FMA latency times FMA ports on current cores (4-5 cycles x 2 ports), and few enough to stay in
// registers with a and b (16 ymm registers for AVX2, 32 zmm for AVX-512). a and b keep x near b/(1-a),
// away from denormals and overflow.

constexpr int kChainsAvx512 = 24, kChainsAvx2 = 12;

#define COVENANT_FMA_CHAINS(FMA, T, SET1, ADD, lanes, chains)                          \
  T x[chains];                                                                         \
  const T a = SET1(0.9999999f), b = SET1(1e-7f);                                       \
  for (int c = 0; c < chains; ++c) x[c] = SET1(0.5f + 0.01f * c);                      \
  for (long i = 0; i < iters; ++i) {                                                   \
    _Pragma("GCC unroll 24") for (int c = 0; c < chains; ++c) x[c] = FMA(x[c], a, b);  \
  }                                                                                    \
  T s = x[0];                                                                          \
  for (int c = 1; c < chains; ++c) s = ADD(s, x[c]);                                   \
  alignas(64) float out[lanes];                                                        \
  std::memcpy(out, &s, sizeof out);                                                    \
  float r = 0;                                                                         \
  for (float v : out) r += v;                                                          \
  return r;

__attribute__((target("avx512f"))) float fma_chains_avx512(long iters) {
  COVENANT_FMA_CHAINS(_mm512_fmadd_ps, __m512, _mm512_set1_ps, _mm512_add_ps, 16, kChainsAvx512)
}
__attribute__((target("avx2,fma"))) float fma_chains_avx2(long iters) {
  COVENANT_FMA_CHAINS(_mm256_fmadd_ps, __m256, _mm256_set1_ps, _mm256_add_ps, 8, kChainsAvx2)
}
#undef COVENANT_FMA_CHAINS

struct PeakIsa {
  const char* name;
  int lanes, chains;
  float (*fn)(long);
};

// Seconds for `threads` threads to each run fn(iters), released together (the caller is thread 0).
double run_on_threads(const PeakIsa& isa, long iters, int threads) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<float> sink{0.f};
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; ++t)
    ts.emplace_back([&] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      sink.store(isa.fn(iters), std::memory_order_relaxed);
    });
  while (ready.load() < threads - 1) std::this_thread::yield();
  auto t0 = Clock::now();
  go.store(true, std::memory_order_release);
  sink.store(isa.fn(iters), std::memory_order_relaxed);
  for (auto& t : ts) t.join();
  double dt = since(t0);
  if (std::isnan(sink.load())) fail("FMA loop produced NaN");
  return dt;
}

int cmd_peak(const Args& args) {
  int threads = (int)args.integer("threads", default_threads(), 1, 1024);
  double min_seconds = args.real("min-seconds", 0.3, 0.001, 60);
  __builtin_cpu_init();
  std::vector<PeakIsa> isas;
  if (__builtin_cpu_supports("avx512f")) isas.push_back({"avx512", 16, kChainsAvx512, fma_chains_avx512});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back({"avx2", 8, kChainsAvx2, fma_chains_avx2});
  if (isas.empty()) fail("peak needs AVX2+FMA or AVX-512; this CPU has neither, so there is no measured fp32 peak");

  // Measure every ISA the CPU has; the peak is the best of them (some CPUs clock AVX-512 down).
  Row row;
  row.str("impl", "limit").str("case", "fp32_peak").integer("threads", threads);
  double best = 0, best_median = 0;
  std::string best_isa;
  for (const PeakIsa& isa : isas) {
    // Calibrate iterations so one run takes about min_seconds / 5 on one thread.
    long iters = 1 << 16;
    for (;;) {
      double dt = run_on_threads(isa, iters, 1);
      if (dt > 0.02 || iters > (1L << 40)) {
        iters = std::max(1L << 12, (long)(iters * (min_seconds / 5) / dt));
        break;
      }
      iters *= 4;
    }
    run_on_threads(isa, iters, threads);  // warm-up: clocks settle
    std::vector<double> g;
    for (int r = 0; r < 5; ++r) {
      double dt = run_on_threads(isa, iters, threads);
      g.push_back(2.0 * isa.lanes * isa.chains * (double)iters * threads / dt / 1e9);
    }
    std::sort(g.begin(), g.end());
    row.num((std::string("gflops_") + isa.name).c_str(), g.back());
    if (g.back() > best) {
      best = g.back();
      best_median = g[g.size() / 2];
      best_isa = isa.name;
    }
  }
  // Interference only ever lowers a throughput figure, so the limit is the best run (of 5); the median is
  // there to show the noise.
  row.str("isa", best_isa).num("gflops", best).num("gflops_median", best_median).print();
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// gemm: our packed kernel and BLAS, both split over our pool, against BLAS on its own threads.

struct GemmCase {
  const char* name;
  int M, N, K;
  Trans ta, tb;
};

struct GemmImpl {
  const char* impl;     // "covenant" or "openblas"
  const char* backend;  // "packed", "blas-in-pool", "openblas-threads"
  bool blas;
};

void run_gemm_impl(const GemmImpl& im, const GemmCase& c, const float* A, const float* B, float* C,
                   ThreadPool& pool, int threads) {
  int lda = c.ta == Trans::N ? c.K : c.M;
  int ldb = c.tb == Trans::N ? c.N : c.K;
  if (std::strcmp(im.backend, "packed") == 0)
    gemm(GemmBackend::Packed, c.ta, c.tb, c.M, c.N, c.K, 1.f, A, lda, B, ldb, 0.f, C, c.N, &pool);
  else if (std::strcmp(im.backend, "blas-in-pool") == 0)
    gemm(GemmBackend::Blas, c.ta, c.tb, c.M, c.N, c.K, 1.f, A, lda, B, ldb, 0.f, C, c.N, &pool);
  else
    gemm_blas_own_threads(c.ta, c.tb, c.M, c.N, c.K, 1.f, A, lda, B, ldb, 0.f, C, c.N, threads);
}

// Every implementation against gemm_ref, on the 256^3 case (NN) and an NT case with uneven edges.
void check_gemm(const std::vector<GemmImpl>& impls, ThreadPool& pool, int threads) {
  const GemmCase checks[] = {{"check_nn", 256, 256, 256, Trans::N, Trans::N},
                             {"check_nt", 200, 296, 264, Trans::N, Trans::T}};
  for (const GemmCase& c : checks) {
    auto A = randn((size_t)c.M * c.K, 1), B = randn((size_t)c.K * c.N, 2);
    std::vector<float> ref((size_t)c.M * c.N), got((size_t)c.M * c.N);
    int lda = c.ta == Trans::N ? c.K : c.M;
    int ldb = c.tb == Trans::N ? c.N : c.K;
    gemm_ref(c.ta, c.tb, c.M, c.N, c.K, 1.f, A.data(), lda, B.data(), ldb, 0.f, ref.data(), c.N);
    for (const GemmImpl& im : impls) {
      std::fill(got.begin(), got.end(), NAN);
      run_gemm_impl(im, c, A.data(), B.data(), got.data(), pool, threads);
      double err = rel_max_err(got.data(), ref.data(), got.size());
      if (!(err < 1e-5))
        fail(std::string("GEMM ") + im.impl + "/" + im.backend + " disagrees with gemm_ref on " + c.name + " (M=" +
             std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
             "): max error " + std::to_string(err) + " of max |C| (tolerance 1e-5); not timing a wrong kernel");
    }
  }
  std::fprintf(stderr, "gemm: %zu implementation(s) agree with gemm_ref (256^3 NN, 200x296x264 NT)\n", impls.size());
}

int cmd_gemm(const Args& args) {
  int threads = (int)args.integer("threads", default_threads(), 1, 1024);
  double min_seconds = args.real("min-seconds", 0.3, 0.0, 60);
  std::vector<int> sizes = args.int_list("sizes", {256, 512, 1024, 2048}, 1, 16384);
  bool blas_only = args.flag("blas-only");
  bool shapes = !args.flag("no-shapes");

  std::vector<GemmImpl> impls;
  if (!blas_only) impls.push_back({"covenant", "packed", false});
  if (gemm_have_blas()) {
    impls.push_back({"covenant", "blas-in-pool", true});
    impls.push_back({"openblas", "openblas-threads", true});
  } else {
    std::fprintf(stderr, "gemm: this build has no BLAS; BLAS rows skipped\n");
  }
  if (impls.empty()) return 0;

  ThreadPool pool(threads);
  check_gemm(impls, pool, threads);

  std::vector<GemmCase> cases;
  for (int s : sizes) cases.push_back({"square", s, s, s, Trans::N, Trans::N});
  if (shapes) {
    // Training shapes at B*T = 256 tokens, GPT-2 small: the qkv projection (x @ W^T, W is (3C,C)) and the
    // tied LM head (x @ wte^T, wte is (V,C)).
    cases.push_back({"qkv_fwd", 256, 2304, 768, Trans::N, Trans::T});
    cases.push_back({"lm_head", 256, 50257, 768, Trans::N, Trans::T});
  }
  const std::string env = openblas_env(), info = gemm_blas_info(), core = gemm_have_blas() ? blas_core() : "none";
  for (const GemmCase& c : cases) {
    auto A = randn((size_t)c.M * c.K, 3), B = randn((size_t)c.K * c.N, 4);
    std::vector<float> C((size_t)c.M * c.N);
    double flops = 2.0 * c.M * (double)c.N * c.K;
    for (const GemmImpl& im : impls) {
      Timing t = time_it([&] { run_gemm_impl(im, c, A.data(), B.data(), C.data(), pool, threads); }, min_seconds);
      Row r;
      r.str("impl", im.impl).str("backend", im.backend).str("case", c.name)
          .str("trans", std::string(c.ta == Trans::N ? "N" : "T") + (c.tb == Trans::N ? "N" : "T"))
          .integer("M", c.M).integer("N", c.N).integer("K", c.K).integer("threads", threads)
          .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
          .num("gflops", flops / t.median / 1e9);
      if (im.blas) r.str("blas_info", info).str("blas_core", core);
      else r.str("isa", gemm_packed_isa());
      r.str("openblas_env", env).print();
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// attention: flash against naive, causal, forward and forward+backward.

int cmd_attention(const Args& args) {
  int threads = (int)args.integer("threads", default_threads(), 1, 1024);
  double min_seconds = args.real("min-seconds", 0.3, 0.0, 60);
  int B = (int)args.integer("B", 4, 1, 1 << 16);
  int C = (int)args.integer("C", 768, 1, 1 << 16);
  int NH = (int)args.integer("NH", 12, 1, 1 << 12);
  std::vector<int> Ts = args.int_list("T", {64, 256, 1024}, 1, 1 << 16);
  if (C % NH) fail("--C (" + std::to_string(C) + ") must be divisible by --NH (" + std::to_string(NH) + ")");
  const int hs = C / NH;
  ThreadPool pool(threads);

  for (size_t ti = 0; ti < Ts.size(); ++ti) {
    const int T = Ts[ti];
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
    auto qkv = randn(nqkv, 21 + T, 0.7f), dout = randn(nout, 22 + T);
    // qkv (B,T,3C); out (B,T,C); lse (B,NH,T); preatt/att/dpreatt/datt (B,NH,T,T); dqkv (B,T,3C)
    std::vector<float> out_f(nout), out_n(nout), lse((size_t)B * NH * T), dq_f(nqkv), dq_n(nqkv);
    std::vector<float> preatt(natt), att(natt), dpreatt(natt), datt(natt);

    auto flash_fwd = [&] { attention_flash_forward(out_f.data(), lse.data(), qkv.data(), B, T, C, NH, &pool); };
    auto flash_bwd = [&] {
      attention_flash_backward(dq_f.data(), dout.data(), qkv.data(), out_f.data(), lse.data(), B, T, C, NH, &pool);
    };
    auto naive_fwd = [&] {
      attention_naive_forward(out_n.data(), preatt.data(), att.data(), qkv.data(), B, T, C, NH, &pool);
    };
    auto naive_bwd = [&] {
      attention_naive_backward(dq_n.data(), dpreatt.data(), datt.data(), dout.data(), qkv.data(), att.data(), B, T,
                               C, NH, &pool);
    };

    if (ti == 0) {
      flash_fwd();
      naive_fwd();
      double ef = rel_max_err(out_f.data(), out_n.data(), nout);
      flash_bwd();
      naive_bwd();
      double eb = rel_max_err(dq_f.data(), dq_n.data(), nqkv);
      if (!(ef < 1e-5 && eb < 1e-4))
        fail("flash attention disagrees with naive at B=" + std::to_string(B) + " T=" + std::to_string(T) +
             " C=" + std::to_string(C) + " NH=" + std::to_string(NH) + ": forward error " + std::to_string(ef) +
             " (tolerance 1e-5), backward error " + std::to_string(eb) + " (tolerance 1e-4); not timing it");
      std::fprintf(stderr, "attention: flash agrees with naive at T=%d (fwd err %.2g, bwd err %.2g)\n", T, ef, eb);
    }

    const double fwd_flops = 2.0 * B * NH * (double)T * T * hs;
    const size_t flash_scratch = attention_flash_scratch_bytes(B, T, NH, hs, threads);
    const size_t naive_scratch = attention_naive_scratch_bytes(B, T, NH);
    struct Variant {
      const char* variant;
      const char* pass;
      std::function<void()> fn;
      double flops;
      size_t scratch;
    };
    const Variant variants[] = {
        {"flash", "fwd", flash_fwd, fwd_flops, flash_scratch},
        {"flash", "fwd+bwd", [&] { flash_fwd(); flash_bwd(); }, 3.5 * fwd_flops, flash_scratch},
        {"naive", "fwd", naive_fwd, fwd_flops, naive_scratch},
        // The naive backward also needs dpreatt and datt, as large as preatt and att.
        {"naive", "fwd+bwd", [&] { naive_fwd(); naive_bwd(); }, 3.5 * fwd_flops, 2 * naive_scratch},
    };
    for (const Variant& v : variants) {
      Timing t = time_it(v.fn, min_seconds);
      Row()
          .str("impl", "covenant").str("variant", v.variant).str("pass", v.pass)
          .integer("B", B).integer("T", T).integer("C", C).integer("NH", NH).integer("threads", threads)
          .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
          .num("flops", v.flops).num("gflops", v.flops / t.median / 1e9)
          .integer("scratch_bytes", (long long)v.scratch)
          .print();
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// quant: int8 quantize / dequantize / dequantize-accumulate / error-feedback compress over --mib MiB of fp32,
// beside memcpy of the same fp32 bytes on the same threads (the memory-bandwidth limit), and the
// quantization error of each block size on Gaussian and heavy-tailed (Student-t, 3 degrees of freedom) data.
//
// `bytes` is the fp32 size of the tensor (n * 4) for every row, so GBps compares directly with memcpy's
// (which reads and writes `bytes`); `traffic_bytes` counts every byte read or written.

// Student-t with 3 degrees of freedom: heavy tails like those of gradients (a few elements far larger than
// the rest).
std::vector<float> student_t3(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) {
    float a = r.normal(), b = r.normal(), c = r.normal();
    x = r.normal() / std::sqrt((a * a + b * b + c * c) / 3.f + 1e-12f);
  }
  return v;
}

int cmd_quant(const Args& args) {
  int threads = (int)args.integer("threads", default_threads(), 1, 1024);
  double min_seconds = args.real("min-seconds", 0.3, 0.0, 60);
  long mib = args.integer("mib", 64, 1, 16384);
  std::vector<int> blocks = args.int_list("blocks", {32, 64, 128, 256, 1024}, 1, 1 << 24);
  ThreadPool pool(threads);
  const size_t n = (size_t)mib * (1 << 20) / sizeof(float);
  const double bytes = (double)n * sizeof(float);
  const char* isa = quant_isa_name(quant_best_isa());

  // Correctness first: the kernels that run (best ISA, this pool) against the scalar reference.
  {
    const size_t m = std::min<size_t>(n, (1 << 20) + 77);
    auto x = randn(m, 31);
    for (int block : blocks) {
      const size_t nb = quant_num_blocks(m, block);
      std::vector<int8_t> q(m), qr(m);
      std::vector<float> s(nb), sr(nb), d(m), dr(m);
      quantize_int8(q.data(), s.data(), x.data(), m, block, &pool);
      quantize_int8_ref(qr.data(), sr.data(), x.data(), m, block);
      dequantize_int8(d.data(), q.data(), s.data(), m, block, &pool);
      dequantize_int8_ref(dr.data(), qr.data(), sr.data(), m, block);
      if (std::memcmp(q.data(), qr.data(), m) || std::memcmp(s.data(), sr.data(), nb * 4) ||
          std::memcmp(d.data(), dr.data(), m * 4))
        fail("quant: the " + std::string(isa) + " kernels disagree with the scalar reference at block " +
             std::to_string(block) + "; not timing them");
    }
    std::fprintf(stderr, "quant: %s kernels match the scalar reference bit for bit (%zu elements, %zu block sizes)\n", isa, m,
                 blocks.size());
  }

  // The limit: memcpy of the fp32 tensor, split over the same pool.
  auto x = randn(n, 32);
  std::vector<float> dst(n), acc(n, 0.f);
  auto pcopy = [&](float* to, const float* from) {
    pool.parallel_for((int64_t)n, [&](int64_t b, int64_t e, int) { std::memcpy(to + b, from + b, (e - b) * sizeof(float)); }, 1 << 14);
  };
  {
    Timing t = time_it([&] { pcopy(dst.data(), x.data()); }, min_seconds);
    Row().str("impl", "limit").str("op", "memcpy").integer("n", (long long)n).integer("bytes", (long long)bytes)
        .integer("traffic_bytes", (long long)(2 * bytes)).integer("threads", threads)
        .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
        .num("GBps", bytes / t.median / 1e9).num("traffic_GBps", 2 * bytes / t.median / 1e9).print();
  }

  // CRC-32C on one thread, as the all-reduce runs it: every implementation this CPU has, on a 128 KiB piece
  // (in cache, as the receiver checksums what just arrived) and on the whole tensor (from memory).
  for (Crc32cImpl impl : {Crc32cImpl::Portable, Crc32cImpl::Sse42, Crc32cImpl::Vpclmul}) {
    if (!crc32c_impl_supported(impl)) continue;
    for (size_t len : {size_t(128) << 10, size_t(bytes)}) {
      uint32_t sink = 0;
      Timing t = time_it([&] { sink = crc32c_extend_with(impl, sink, x.data(), len); }, min_seconds);
      Row().str("impl", "covenant").str("op", "crc32c").str("crc", crc32c_impl_name(impl)).integer("bytes", (long long)len)
          .integer("threads", 1).num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
          .num("GBps", len / t.median / 1e9).integer("sink", sink & 1).print();
    }
  }

  auto gauss_err = randn(1 << 22, 33);
  auto heavy_err = student_t3(1 << 22, 34);
  for (int block : blocks) {
    const size_t nb = quant_num_blocks(n, block);
    std::vector<int8_t> q(n);
    std::vector<float> s(nb);
    ErrorFeedbackCompressor ef(n, block);
    const double code_bytes = (double)n + 4.0 * nb;
    struct Op {
      const char* op;
      std::function<void()> fn;
      double traffic;
    };
    const Op ops[] = {
        {"quantize", [&] { quantize_int8(q.data(), s.data(), x.data(), n, block, &pool); }, bytes + code_bytes},
        {"dequantize", [&] { dequantize_int8(dst.data(), q.data(), s.data(), n, block, &pool); }, code_bytes + bytes},
        {"dequantize_accumulate",
         [&] { dequantize_accumulate_int8(acc.data(), q.data(), s.data(), n, block, &pool); }, code_bytes + 2 * bytes},
        // pass 1 reads input and residual; pass 2 reads them again and writes codes, scales and residual
        {"compress", [&] { ef.compress(q.data(), s.data(), x.data(), &pool); }, 2 * bytes + 3 * bytes + code_bytes},
    };
    quantize_int8(q.data(), s.data(), x.data(), n, block, &pool);
    for (const Op& o : ops) {
      Timing t = time_it(o.fn, min_seconds);
      Row().str("impl", "covenant").str("op", o.op).str("isa", isa).integer("block", block).integer("n", (long long)n)
          .integer("bytes", (long long)bytes).integer("traffic_bytes", (long long)o.traffic).integer("threads", threads)
          .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
          .num("GBps", bytes / t.median / 1e9).num("traffic_GBps", o.traffic / t.median / 1e9).print();
    }

    // Error of one quantize/dequantize round trip: RMS of (x - dequant) over RMS of x, and the largest
    // |x - dequant| in units of its block's scale (the bound is 1/2 + 2^-16).
    for (const auto& data : {std::make_pair("gaussian", &gauss_err), std::make_pair("student_t3", &heavy_err)}) {
      const std::vector<float>& v = *data.second;
      const size_t m = v.size(), mb = quant_num_blocks(m, block);
      std::vector<int8_t> vq(m);
      std::vector<float> vs(mb), vd(m);
      quantize_int8(vq.data(), vs.data(), v.data(), m, block, &pool);
      dequantize_int8(vd.data(), vq.data(), vs.data(), m, block, &pool);
      double se = 0, sx = 0, worst = 0;
      for (size_t i = 0; i < m; ++i) {
        double e = (double)v[i] - vd[i];
        se += e * e;
        sx += (double)v[i] * v[i];
        if (vs[i / block] > 0) worst = std::max(worst, std::fabs(e) / vs[i / block]);
      }
      Row().str("impl", "covenant").str("op", "error").str("data", data.first).integer("block", block)
          .integer("n", (long long)m).num("rel_rms_err", std::sqrt(se / sx)).num("max_err_over_scale", worst)
          .num("bytes_per_element", (double)quantized_bytes(m, block) / m)
          .num("scale_overhead", 4.0 / block).print();
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// tcp: single-stream TCP bandwidth through the all-reduce's socket code (the limit of the all-reduce bench).

int cmd_tcp(const Args& args) {
  const long mib = args.integer("mib", 1024, 1, 1 << 20);
  const long chunk_kib = args.integer("chunk-kib", 1024, 1, 1 << 20);
  const int reps = (int)args.integer("reps", 3, 1, 1000);
  const std::string host = args.get("host") ? *args.get("host") : "127.0.0.1";
  const size_t chunk = (size_t)chunk_kib << 10;
  const size_t total = (size_t)mib << 20;
  const size_t chunks = (total + chunk - 1) / chunk;
  const auto timeout = std::chrono::milliseconds(30000);

  comm::Listener listener;
  listener.open(PeerAddress{host, 0});
  sockaddr_storage sa{};
  socklen_t salen = sizeof sa;
  if (::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&sa), &salen) != 0) fail("tcp: getsockname failed");
  const int port = sa.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&sa)->sin_port);

  comm::TcpConn out;
  std::string connect_error;
  std::thread connector([&] {
    comm::IoResult r = comm::connect_with_retry(PeerAddress{host, port}, comm::Clock::now() + timeout, -1, &out);
    if (r.status != comm::IoStatus::Ok) connect_error = r.describe();
  });
  pollfd p = {listener.fd(), POLLIN, 0};
  int fd = ::poll(&p, 1, 30000) > 0 ? ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC) : -1;
  connector.join();
  if (fd < 0 || !connect_error.empty()) fail("tcp: cannot connect to " + host + ":" + std::to_string(port) + " " + connect_error);
  comm::tune_socket(fd);
  comm::TcpConn in(fd);
  listener.close();

  // The sender writes `chunks` chunks per rep; the first 8 bytes of each carry its index, which the
  // receiver checks in the warm-up rep (recv_all reads whole chunks, so chunk boundaries line up).
  std::vector<uint8_t> sbuf(chunk, 0x5a), rbuf(chunk);
  std::mutex mu;
  std::condition_variable cv;
  int go = -1;  // the rep the sender may start; reps + 1: stop
  std::string send_error;
  std::thread sender([&] {
    for (int rep = 0; rep <= reps; ++rep) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return go >= rep; });
        if (go > reps) return;
      }
      for (size_t c = 0; c < chunks; ++c) {
        const size_t len = std::min(chunk, total - c * chunk);
        uint64_t idx = c;
        if (len >= 8) std::memcpy(sbuf.data(), &idx, 8);
        comm::IoResult r = out.send_all(sbuf.data(), len, timeout, -1);
        if (r.status != comm::IoStatus::Ok) {
          send_error = r.describe();
          out.close();
          return;
        }
      }
    }
  });
  // CPU time of both threads over the timed reps: how much of the machine one stream takes.
  auto cpu_now = [] {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  };
  auto stop = [&](const std::string& why) {
    in.close();
    {
      std::lock_guard<std::mutex> lock(mu);
      go = reps + 1;
    }
    cv.notify_all();
    sender.join();
    fail(why + (send_error.empty() ? "" : "; send: " + send_error));
  };
  std::vector<double> ts;
  double cpu0 = 0;
  for (int rep = 0; rep <= reps; ++rep) {
    if (rep == 1) cpu0 = cpu_now();
    auto t0 = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu);
      go = rep;
    }
    cv.notify_all();
    for (size_t c = 0; c < chunks; ++c) {
      const size_t len = std::min(chunk, total - c * chunk);
      comm::IoResult r = in.recv_all(rbuf.data(), len, timeout, -1);
      if (r.status != comm::IoStatus::Ok) stop("tcp: receive failed: " + r.describe());
      uint64_t idx = 0;
      if (rep == 0 && len >= 8 && (std::memcpy(&idx, rbuf.data(), 8), idx != c))
        stop("tcp: chunk " + std::to_string(c) + " arrived as chunk " + std::to_string(idx) + "; not timing");
    }
    if (rep > 0) ts.push_back(since(t0));
  }
  const double cpu = cpu_now() - cpu0;
  double timed = 0;
  for (double t : ts) timed += t;
  sender.join();
  std::sort(ts.begin(), ts.end());
  const size_t n = ts.size();
  const double median = n % 2 ? ts[n / 2] : 0.5 * (ts[n / 2 - 1] + ts[n / 2]);
  std::fprintf(stderr, "tcp: %ld MiB per rep over %s:%d in %ld KiB writes, warm-up rep checked\n", mib, host.c_str(), port,
               chunk_kib);
  Row().str("impl", "limit").str("case", "tcp_loopback").str("host", host).integer("streams", 1)
      .integer("bytes", (long long)total).integer("chunk_bytes", (long long)chunk)
      .num("seconds", median).num("seconds_min", ts[0]).integer("reps", (int)n)
      .num("GBps", (double)total / median / 1e9).num("cpu_seconds_per_rep", cpu / n).num("cores_busy", cpu / timed)
      .integer("hardware_threads", ThreadPool::hardware_threads()).print();
  return 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: covenant_native_bench info\n"
               "       covenant_native_bench peak [--threads N] [--min-seconds S]\n"
               "       covenant_native_bench gemm [--sizes 256,512,1024,2048] [--threads N] [--blas-only] "
               "[--no-shapes] [--min-seconds S]\n"
               "       covenant_native_bench attention [--threads N] [--T 64,256,1024] [--B 4] [--C 768] "
               "[--NH 12] [--min-seconds S]\n"
               "       covenant_native_bench quant [--threads N] [--mib 64] [--blocks 32,64,128,256,1024] "
               "[--min-seconds S]\n"
               "       covenant_native_bench tcp [--mib 1024] [--chunk-kib 1024] [--reps 3] [--host 127.0.0.1]\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage();
    return 2;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "info") return cmd_info();
    if (cmd == "peak") return cmd_peak(parse_args(argc, argv, 2, {"threads", "min-seconds"}, {}));
    if (cmd == "gemm")
      return cmd_gemm(parse_args(argc, argv, 2, {"threads", "min-seconds", "sizes"}, {"blas-only", "no-shapes"}));
    if (cmd == "attention")
      return cmd_attention(parse_args(argc, argv, 2, {"threads", "min-seconds", "T", "B", "C", "NH"}, {}));
    if (cmd == "quant") return cmd_quant(parse_args(argc, argv, 2, {"threads", "min-seconds", "mib", "blocks"}, {}));
    if (cmd == "tcp") return cmd_tcp(parse_args(argc, argv, 2, {"mib", "chunk-kib", "reps", "host"}, {}));
  } catch (const std::exception& e) {
    fail(std::string(cmd) + ": " + e.what());
  }
  usage();
  return 2;
}

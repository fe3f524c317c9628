// The GPU suite: every CUDA kernel against the CPU reference on fresh random inputs, with every device output
// poisoned (0xFF bytes) before each run (outputs that accumulate start from random values instead):
//   - include/covenant/cuda_quant.h against the scalar *_ref functions and ErrorFeedbackCompressor, bit for bit;
//   - include/covenant/cuda_kernels.h against kernels.h (and, for non-causal attention, an fp64 host
//     reference), each at the tolerance stated by its test;
//   - the CUDA engine: cuda_gemm.h against gemm_ref, the fp32 attention against the CPU flash attention, and
//     GPTCuda trained side by side with the CPU GPT (same seed, same tokens; losses within 2e-2 per step);
//   - the round delta (round_delta_cuda.h, and cuda::difference under it) against the CPU engine's and the host
//     path (Δ elementwise, then ErrorFeedbackCompressor), bit for bit.
// Exits 0 with "GPU suite skipped: no CUDA device" where there is no device. The seed is printed;
// COVENANT_GPU_TEST_SEED=N repeats a run. argv[1] filters tests by name.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../core/cuda_check.h"
#include "../core/device_buffer.h"
#include "covenant/cuda_gemm.h"
#include "covenant/cuda_kernels.h"
#include "covenant/cuda_quant.h"
#include "covenant/gemm.h"
#include "covenant/gpt.h"
#include "covenant/gpt_cuda.h"
#include "covenant/kernels.h"
#include "covenant/quant.h"
#include "covenant/thread_pool.h"
#include "harness.h"

using namespace covenant;

namespace {

std::mt19937_64 g_rng;
int g_sm_major = 0;  // compute capability (major) of device 0

// The CPU reference kernels take a ThreadPool (never null); one for the whole suite.
ThreadPool& cpu_pool() {
  static ThreadPool pool(0);
  return pool;
}

// Index of the first element whose bytes differ, or n.
template <class T>
size_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
  return a.size();
}

template <class T>
bool all_poison(const std::vector<T>& a) {
  for (const T& v : a) {
    const unsigned char* c = reinterpret_cast<const unsigned char*>(&v);
    for (size_t k = 0; k < sizeof(T); ++k)
      if (c[k] != 0xFF) return false;
  }
  return true;
}

double as_double(float f) { return static_cast<double>(f); }

// x (n): each block of `block` gets one kind of data: Gaussian at a random magnitude, Gaussian with an outlier,
// all zero, subnormals only, tiny normals (scale flushed to 0), values up to +-FLT_MAX, exact ties
// (k + 1/2 with absmax 127, so scale 1), or subnormals mixed with a small normal absmax.
std::vector<float> quant_data(size_t n, int block) {
  std::vector<float> x(n);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const size_t B = static_cast<size_t>(block);
  for (size_t b0 = 0; b0 < n; b0 += B) {
    const size_t len = std::min(B, n - b0);
    float* xb = x.data() + b0;
    const int kind = static_cast<int>(g_rng() % 8);
    switch (kind) {
      case 0: {
        const float mag = std::pow(10.0f, unit(g_rng) * 12.0f - 6.0f);
        for (size_t i = 0; i < len; ++i) xb[i] = gauss(g_rng) * mag;
        break;
      }
      case 1:
        for (size_t i = 0; i < len; ++i) xb[i] = gauss(g_rng);
        xb[g_rng() % len] = (g_rng() & 1 ? 1.0f : -1.0f) * 1e4f * (1.0f + unit(g_rng));
        break;
      case 2:
        break;  // all zero
      case 3:
        for (size_t i = 0; i < len; ++i) {
          uint32_t bits = static_cast<uint32_t>(g_rng() & 0x807fffffu);  // exponent 0: subnormal (or +-0)
          std::memcpy(&xb[i], &bits, 4);
        }
        break;
      case 4:
        for (size_t i = 0; i < len; ++i) xb[i] = gauss(g_rng) * 1e-37f;
        break;
      case 5:
        for (size_t i = 0; i < len; ++i) xb[i] = (unit(g_rng) * 2.0f - 1.0f) * FLT_MAX;
        xb[g_rng() % len] = g_rng() & 1 ? FLT_MAX : -FLT_MAX;
        break;
      case 6:
        for (size_t i = 0; i < len; ++i) xb[i] = static_cast<float>(static_cast<int>(g_rng() % 253) - 126) + 0.5f;
        xb[g_rng() % len] = 127.0f;
        break;
      default:
        for (size_t i = 0; i < len; ++i) {
          uint32_t bits = static_cast<uint32_t>(g_rng() & 0x807fffffu);
          std::memcpy(&xb[i], &bits, 4);
        }
        xb[g_rng() % len] = 1e-35f;
        break;
    }
  }
  return x;
}

std::vector<size_t> sizes_for(int block) {
  std::vector<size_t> s = {0, 1, 7, (size_t)block, (size_t)block + 1, 3 * (size_t)block + 5, 1000003};
  if (block > 1) s.push_back((size_t)block - 1);
  return s;
}
const int kBlocks[] = {1, 7, 32, 128, 256, 1000, 4096};

void test_quantize() {
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  for (int block : kBlocks)
    for (size_t n : sizes_for(block)) {
      const auto x = quant_data(n, block);
      const size_t nb = quant_num_blocks(n, block);
      std::vector<int8_t> qr(n);
      std::vector<float> sr(nb);
      quantize_int8_ref(qr.data(), sr.data(), x.data(), n, block);

      Dev<float> dx(n), ds(nb);
      Dev<int8_t> dq(n);
      dx.upload(x);
      dq.poison();
      ds.poison();
      cuda::quantize_int8(dq.p, ds.p, dx.p, n, block, (n & 1) ? stream : nullptr);
      size_t at = first_diff(dq.download(), qr);
      CHECK(at == n, "block=%d n=%zu: codes differ from quantize_int8_ref, mismatch at index %zu", block, n, at);
      const auto s = ds.download();
      at = first_diff(s, sr);
      CHECK(at == nb, "block=%d n=%zu: scales differ from quantize_int8_ref, mismatch at block %zu (gpu %g, cpu %g)",
            block, n, at, at < nb ? as_double(s[at]) : 0.0, at < nb ? as_double(sr[at]) : 0.0);
    }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

// Codes in [-128, 127] (dequantize accepts -128) and valid scales of every kind: 0, subnormal, normal, and
// large enough that code * scale overflows to inf, as on the CPU.
void random_codes_scales(std::vector<int8_t>& q, std::vector<float>& s) {
  for (auto& c : q) c = static_cast<int8_t>(static_cast<int>(g_rng() % 256) - 128);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (auto& v : s) {
    switch (g_rng() % 5) {
      case 0: v = 0.0f; break;
      case 1: { uint32_t bits = static_cast<uint32_t>(g_rng() & 0x007fffffu); std::memcpy(&v, &bits, 4); break; }
      case 2: v = FLT_MAX * unit(g_rng); break;
      default: v = std::pow(10.0f, unit(g_rng) * 20.0f - 10.0f); break;
    }
  }
}

void test_dequantize() {
  for (int block : kBlocks)
    for (size_t n : sizes_for(block)) {
      const size_t nb = quant_num_blocks(n, block);
      // Both from quantize_int8_ref's output (the real use) and from arbitrary codes and scales.
      for (int source = 0; source < 2; ++source) {
        std::vector<int8_t> q(n);
        std::vector<float> s(nb);
        if (source == 0) {
          const auto x = quant_data(n, block);
          quantize_int8_ref(q.data(), s.data(), x.data(), n, block);
        } else {
          random_codes_scales(q, s);
        }
        std::vector<float> dr(n);
        dequantize_int8_ref(dr.data(), q.data(), s.data(), n, block);
        std::normal_distribution<float> gauss(0.0f, 1.0f);
        std::vector<float> acc0(n);
        for (auto& v : acc0) v = gauss(g_rng);
        std::vector<float> accr = acc0;
        dequantize_accumulate_int8_ref(accr.data(), q.data(), s.data(), n, block);

        Dev<int8_t> dq(n);
        Dev<float> ds(nb), dout(n), dacc(n);
        dq.upload(q);
        ds.upload(s);
        dout.poison();
        cuda::dequantize_int8(dout.p, dq.p, ds.p, n, block, nullptr);
        size_t at = first_diff(dout.download(), dr);
        CHECK(at == n, "block=%d n=%zu source=%d: dequantize differs from dequantize_int8_ref, mismatch at index %zu",
              block, n, source, at);
        dacc.upload(acc0);
        cuda::dequantize_accumulate_int8(dacc.p, dq.p, ds.p, n, block, nullptr);
        at = first_diff(dacc.download(), accr);
        CHECK(at == n,
              "block=%d n=%zu source=%d: dequantize_accumulate differs from dequantize_accumulate_int8_ref, "
              "mismatch at index %zu", block, n, source, at);
      }
    }
}

// Three rounds of error feedback from a random starting residual, against ErrorFeedbackCompressor.
void test_error_feedback() {
  for (int block : kBlocks)
    for (size_t n : sizes_for(block)) {
      const size_t nb = quant_num_blocks(n, block);
      ErrorFeedbackCompressor cpu(n, block);
      std::normal_distribution<float> gauss(0.0f, 1.0f);
      std::vector<float> r0(n);
      for (auto& v : r0) v = gauss(g_rng) * 1e-3f;
      cpu.load_residual(r0.data());
      Dev<float> dr(n), din(n), ds(nb);
      Dev<int8_t> dq(n);
      dr.upload(r0);
      for (int round = 0; round < 3; ++round) {
        // Finite sums only: quant_data's +-FLT_MAX blocks plus a residual could overflow; halve them.
        auto x = quant_data(n, block);
        for (auto& v : x) v *= 0.5f;
        std::vector<int8_t> qr(n);
        std::vector<float> sr(nb);
        cpu.compress(qr.data(), sr.data(), x.data(), nullptr, QuantIsa::Scalar);
        din.upload(x);
        dq.poison();
        ds.poison();
        cuda::error_feedback_step(dq.p, ds.p, dr.p, din.p, n, block, nullptr);
        size_t at = first_diff(dq.download(), qr);
        CHECK(at == n, "block=%d n=%zu round=%d: codes differ from ErrorFeedbackCompressor, mismatch at %zu", block, n,
              round, at);
        at = first_diff(ds.download(), sr);
        CHECK(at == nb, "block=%d n=%zu round=%d: scales differ, mismatch at block %zu", block, n, round, at);
        const std::vector<float> cr(cpu.residual(), cpu.residual() + n);
        at = first_diff(dr.download(), cr);
        CHECK(at == n, "block=%d n=%zu round=%d: residual differs, mismatch at index %zu", block, n, round, at);
        if (at != n) dr.upload(cr);  // keep later rounds comparable
      }
    }
}

// NaN / Inf, overflowing sums and bad scales are refused like on the CPU, naming the same first index.
void test_bad_input() {
  const int block = 128;
  const size_t n = 100003;
  const size_t nb = quant_num_blocks(n, block);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto x = quant_data(n, block);
    const size_t at = 1000 + g_rng() % (n - 2000);
    x[at] = bad;
    x[at + 700] = NAN;  // a later block: the lowest index wins
    size_t cpu_index = SIZE_MAX;
    try {
      std::vector<int8_t> q(n);
      std::vector<float> s(nb);
      quantize_int8_ref(q.data(), s.data(), x.data(), n, block);
    } catch (const NonFiniteError& e) {
      cpu_index = e.index();
    }
    Dev<float> dx(n), ds(nb);
    Dev<int8_t> dq(n);
    dx.upload(x);
    size_t gpu_index = SIZE_MAX;
    std::string what;
    try {
      cuda::quantize_int8(dq.p, ds.p, dx.p, n, block, nullptr);
    } catch (const NonFiniteError& e) {
      gpu_index = e.index();
      what = e.what();
    }
    CHECK(gpu_index == at && cpu_index == at, "quantize of %g at %zu: gpu names %zu, cpu %zu", as_double(bad), at,
          gpu_index, cpu_index);
    CHECK(what.find("x[" + std::to_string(at) + "]") != std::string::npos, "message does not name x[%zu]: %s", at,
          what.c_str());

    // error feedback: refused, the residual unchanged
    std::vector<float> r0(n, 0.25f);
    Dev<float> dr(n);
    dr.upload(r0);
    gpu_index = SIZE_MAX;
    try {
      cuda::error_feedback_step(dq.p, ds.p, dr.p, dx.p, n, block, nullptr);
    } catch (const NonFiniteError& e) {
      gpu_index = e.index();
      CHECK(!e.sum_overflow(), "error_feedback_step: non-finite input reported as an overflowing sum");
    }
    CHECK(gpu_index == at, "error_feedback_step of %g at %zu: names %zu", as_double(bad), at, gpu_index);
    CHECK(first_diff(dr.download(), r0) == n, "error_feedback_step changed the residual on bad input");
  }

  {  // finite input whose sum with the residual overflows
    std::vector<float> x(n, 1.0f), r0(n, 0.0f);
    x[5000] = FLT_MAX;
    r0[5000] = FLT_MAX;
    Dev<float> dx(n), dr(n), ds(nb);
    Dev<int8_t> dq(n);
    dx.upload(x);
    dr.upload(r0);
    bool overflow = false;
    size_t idx = SIZE_MAX;
    try {
      cuda::error_feedback_step(dq.p, ds.p, dr.p, dx.p, n, block, nullptr);
    } catch (const NonFiniteError& e) {
      overflow = e.sum_overflow();
      idx = e.index();
    }
    CHECK(overflow && idx == 5000, "error_feedback_step: overflowing sum at 5000 reported as %zu (overflow=%d)", idx,
          int(overflow));
    CHECK(first_diff(dr.download(), r0) == n, "error_feedback_step changed the residual on an overflowing sum");
  }

  for (float bad : {-1.0f, NAN, INFINITY}) {  // bad scales: refused before anything is written
    std::vector<int8_t> q(n, 3);
    std::vector<float> s(nb, 0.5f);
    s[17] = bad;
    s[40] = -2.0f;
    Dev<int8_t> dq(n);
    Dev<float> ds(nb), dout(n);
    dq.upload(q);
    ds.upload(s);
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
      dout.poison();
      std::string what;
      try {
        if (accumulate) cuda::dequantize_accumulate_int8(dout.p, dq.p, ds.p, n, block, nullptr);
        else cuda::dequantize_int8(dout.p, dq.p, ds.p, n, block, nullptr);
      } catch (const std::invalid_argument& e) {
        what = e.what();
      }
      CHECK(what.find("scales[17]") != std::string::npos, "bad scale %g (accumulate=%d): message %s", as_double(bad),
            accumulate, what.c_str());
      CHECK(all_poison(dout.download()), "bad scale %g (accumulate=%d): output was written", as_double(bad), accumulate);
    }
  }

  bool threw = false;
  try {
    cuda::quantize_int8(nullptr, nullptr, nullptr, 10, 0, nullptr);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "block 0 accepted");
}

// ---- layer kernels (include/covenant/cuda_kernels.h) ----

std::vector<float> gauss_vec(size_t n, float sigma, float mean = 0.0f) {
  std::normal_distribution<float> gauss(mean, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = gauss(g_rng);
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::fabs(as_double(x)));
  return m;
}

// The worst element of a comparison: ratio = |got - ref| / (atol + rtol * |ref|), infinite for a NaN or an
// infinity that the reference does not have; ratio <= 1 passes.
struct Worst {
  double ratio = 0.0;
  size_t at = 0;
  double got = 0.0, ref = 0.0;
};
Worst compare(const std::vector<float>& got, const std::vector<float>& ref, double rtol, double atol) {
  Worst w;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], r = ref[i];
    double ratio = g == r ? 0.0 : std::fabs(g - r) / (atol + rtol * std::fabs(r));
    if (std::isnan(ratio) || (!std::isfinite(g) && g != r)) ratio = INFINITY;
    if (ratio > w.ratio) w = Worst{ratio, i, g, r};
  }
  return w;
}
// CHECK that got is within (rtol, atol) of ref; `label` (a std::string) names the case and the tensor.
#define CHECK_CLOSE(gpu_values, ref_values, rtol, atol, label)                                              \
  do {                                                                                                      \
    const Worst w_ = compare(gpu_values, ref_values, rtol, atol);                                           \
    CHECK(w_.ratio <= 1.0, "%s: mismatch at index %zu: gpu %.9g, reference %.9g (error %.3g x the tolerance)", \
          std::string(label).c_str(), w_.at, w_.got, w_.ref, w_.ratio);                                      \
  } while (0)

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Encoder: bit for bit (one fp32 add forward; the backward sums in the CPU's order).
void test_encoder() {
  const int V = 50;  // small: tokens repeat, which the backward must sum in order
  for (int C : {1, 33, 768})
    for (auto bt : {std::pair<int, int>{1, 1}, {3, 17}, {4, 64}}) {
      const int B = bt.first, T = bt.second, maxT = T + 3;
      const size_t n = size_t(B) * T * C;
      std::vector<int32_t> inp(size_t(B) * T);
      for (auto& id : inp) id = static_cast<int32_t>(g_rng() % V);
      const auto wte = gauss_vec(size_t(V) * C, 1.0f), wpe = gauss_vec(size_t(maxT) * C, 1.0f);
      const auto dout = gauss_vec(n, 1.0f);
      const auto dwte0 = gauss_vec(wte.size(), 1.0f), dwpe0 = gauss_vec(wpe.size(), 1.0f);
      std::vector<float> out_r(n), dwte_r = dwte0, dwpe_r = dwpe0;
      encoder_forward(out_r.data(), inp.data(), wte.data(), wpe.data(), B, T, C, &cpu_pool());
      encoder_backward(dwte_r.data(), dwpe_r.data(), dout.data(), inp.data(), B, T, C, &cpu_pool());

      Dev<int32_t> d_inp(inp.size());
      Dev<float> d_wte(wte.size()), d_wpe(wpe.size()), d_out(n), d_dout(n), d_dwte(wte.size()), d_dwpe(wpe.size());
      d_inp.upload(inp);
      d_wte.upload(wte);
      d_wpe.upload(wpe);
      d_dout.upload(dout);
      d_dwte.upload(dwte0);
      d_dwpe.upload(dwpe0);
      d_out.poison();
      cuda::encoder_forward(d_out.p, d_inp.p, d_wte.p, d_wpe.p, B, T, C, nullptr);
      cuda::encoder_backward(d_dwte.p, d_dwpe.p, d_dout.p, d_inp.p, B, T, C, nullptr);
      size_t at = first_diff(d_out.download(), out_r);
      CHECK(at == n, "encoder_forward B=%d T=%d C=%d: differs from the CPU at index %zu", B, T, C, at);
      at = first_diff(d_dwte.download(), dwte_r);
      CHECK(at == wte.size(), "encoder_backward B=%d T=%d C=%d: dwte differs from the CPU at index %zu", B, T, C, at);
      at = first_diff(d_dwpe.download(), dwpe_r);
      CHECK(at == wpe.size(), "encoder_backward B=%d T=%d C=%d: dwpe differs from the CPU at index %zu", B, T, C, at);
    }
}

// LayerNorm. Tolerances (fp32; the GPU's row sums are warp trees, the CPU's sequential): forward out and
// rstd rtol 1e-4, mean atol 1e-5 x the input's scale; out atol 1e-5 x (|offset| + sigma) / sigma x max|weight|,
// since the two means differ by a few ulp of |offset| + sigma and out = (x - mean) * rstd * weight + bias
// carries that difference times rstd ~ 1/sigma times |weight| (a fixed 1e-5 fails about 4 runs in 10 when
// sigma ~ 0.1 and |offset| ~ 2, at elements where out is near 0); backward dinp rtol 1e-4 / atol
// 1e-5 x max|dinp|, dweight and dbias (sums over N rows, in another order) atol 1e-4 x their max.
void test_layernorm() {
  const std::pair<int, int> shapes[] = {{1, 1}, {7, 31}, {64, 768}, {333, 1000}, {2048, 64}};
  for (auto nc : shapes) {
    const int N = nc.first, C = nc.second;
    const size_t n = size_t(N) * C;
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    const float sigma = std::pow(10.0f, unit(g_rng) * 2.0f - 1.0f), offset = unit(g_rng) * 4.0f - 2.0f;
    const auto inp = gauss_vec(n, sigma, offset);
    const auto weight = gauss_vec(C, 1.0f, 1.0f), bias = gauss_vec(C, 0.5f);
    std::vector<float> out_r(n), mean_r(N), rstd_r(N);
    layernorm_forward(out_r.data(), mean_r.data(), rstd_r.data(), inp.data(), weight.data(), bias.data(), N, C,
                      &cpu_pool());

    Dev<float> d_inp(n), d_w(C), d_b(C), d_out(n), d_mean(N), d_rstd(N);
    d_inp.upload(inp);
    d_w.upload(weight);
    d_b.upload(bias);
    d_out.poison();
    d_mean.poison();
    d_rstd.poison();
    cuda::layernorm_forward(d_out.p, d_mean.p, d_rstd.p, d_inp.p, d_w.p, d_b.p, N, C, nullptr);
    const std::string tag = fmt("layernorm N=%d C=%d", N, C);
    const double out_atol = 1e-5 * (std::fabs(offset) + sigma) / sigma * max_abs(weight);
    CHECK_CLOSE(d_out.download(), out_r, 1e-4, out_atol, tag + " forward out");
    CHECK_CLOSE(d_mean.download(), mean_r, 1e-5, 1e-5 * (std::fabs(offset) + sigma), tag + " forward mean");
    CHECK_CLOSE(d_rstd.download(), rstd_r, 1e-4, 0.0, tag + " forward rstd");

    // Backward from the CPU's mean and rstd (so it is tested on its own), into random starting gradients.
    const auto dout = gauss_vec(n, 1.0f);
    const auto dinp0 = gauss_vec(n, 1.0f), dw0 = gauss_vec(C, 1.0f), db0 = gauss_vec(C, 1.0f);
    std::vector<float> dinp_r = dinp0, dw_r = dw0, db_r = db0;
    layernorm_backward(dinp_r.data(), dw_r.data(), db_r.data(), dout.data(), inp.data(), weight.data(), mean_r.data(),
                       rstd_r.data(), N, C, &cpu_pool());
    Dev<float> d_dout(n), d_dinp(n), d_dw(C), d_db(C), d_scratch(cuda::layernorm_backward_scratch_floats(N, C));
    d_dout.upload(dout);
    d_dinp.upload(dinp0);
    d_dw.upload(dw0);
    d_db.upload(db0);
    d_mean.upload(mean_r);
    d_rstd.upload(rstd_r);
    d_scratch.poison();
    cuda::layernorm_backward(d_dinp.p, d_dw.p, d_db.p, d_scratch.p, d_dout.p, d_inp.p, d_w.p, d_mean.p, d_rstd.p, N, C,
                             nullptr);
    CHECK_CLOSE(d_dinp.download(), dinp_r, 1e-4, 1e-5 * max_abs(dinp_r), tag + " backward dinp");
    CHECK_CLOSE(d_dw.download(), dw_r, 0.0, 1e-4 * max_abs(dw_r), tag + " backward dweight");
    CHECK_CLOSE(d_db.download(), db_r, 0.0, 1e-4 * max_abs(db_r), tag + " backward dbias");
  }
}

// GELU. Tolerances: forward rtol 1e-5 / atol 1e-6 (same fp32 operations; tanhf may differ from the host's by an
// ulp or two); backward rtol 1e-4 / atol 1e-5, since 1 - tanh^2 amplifies that ulp for |x| > 4.
void test_gelu() {
  for (size_t n : {size_t(1), size_t(1000), size_t(1) << 20 | 3}) {
    const auto inp = gauss_vec(n, 3.0f), dout = gauss_vec(n, 1.0f), dinp0 = gauss_vec(n, 1.0f);
    std::vector<float> out_r(n), dinp_r = dinp0;
    gelu_forward(out_r.data(), inp.data(), n, &cpu_pool());
    gelu_backward(dinp_r.data(), inp.data(), dout.data(), n, &cpu_pool());
    Dev<float> d_inp(n), d_out(n), d_dout(n), d_dinp(n);
    d_inp.upload(inp);
    d_dout.upload(dout);
    d_dinp.upload(dinp0);
    d_out.poison();
    cuda::gelu_forward(d_out.p, d_inp.p, n, nullptr);
    cuda::gelu_backward(d_dinp.p, d_inp.p, d_dout.p, n, nullptr);
    const std::string tag = fmt("gelu n=%zu", n);
    CHECK_CLOSE(d_out.download(), out_r, 1e-5, 1e-6, tag + " forward");
    CHECK_CLOSE(d_dinp.download(), dinp_r, 1e-4, 1e-5, tag + " backward");
  }
}

// Cross-entropy. Tolerances: losses rtol 1e-5 / atol 1e-5 (both sum exp in double; exp of a float differs by
// an ulp); dlogits rtol 1e-5 / atol 1e-6 x |scale| (the target entry p - 1 cancels); scale 0 leaves the logits
// untouched, bit for bit. The mean of the GPU losses matches the CPU's returned mean to 1e-5.
void test_crossentropy() {
  const std::pair<int, int> shapes[] = {{1, 1}, {5, 7}, {64, 1000}, {8, 50257}};
  for (auto nv : shapes)
    for (int with_grad = 0; with_grad < 2; ++with_grad) {
      const int N = nv.first, V = nv.second;
      const size_t n = size_t(N) * V;
      auto logits = gauss_vec(n, 4.0f);
      for (int k = 0; k < 4 && n > 1; ++k) logits[g_rng() % n] = (g_rng() & 1 ? 30.0f : -30.0f);  // outliers
      std::vector<int32_t> targets(N);
      for (auto& t : targets) t = static_cast<int32_t>(g_rng() % V);
      const float scale = with_grad ? 1.0f / float(N) : 0.0f;
      std::vector<float> dl_r = logits, losses_r(N);
      const double mean_r = crossentropy_forward_backward(dl_r.data(), losses_r.data(), targets.data(), N, V, scale,
                                                          &cpu_pool());
      Dev<float> d_logits(n), d_losses(N);
      Dev<int32_t> d_targets(N);
      d_logits.upload(logits);
      d_targets.upload(targets);
      d_losses.poison();
      cuda::crossentropy_forward_backward(d_logits.p, d_losses.p, d_targets.p, N, V, scale, nullptr);
      const std::string tag = fmt("crossentropy N=%d V=%d scale=%g", N, V, double(scale));
      const auto losses = d_losses.download();
      CHECK_CLOSE(losses, losses_r, 1e-5, 1e-5, tag + " losses");
      double sum = 0.0;
      for (float l : losses) sum += l;
      CHECK(std::fabs(sum / N - mean_r) <= 1e-5 * (1.0 + std::fabs(mean_r)), "%s: mean loss %.9g, cpu %.9g",
            tag.c_str(), sum / N, mean_r);
      if (with_grad) {
        CHECK_CLOSE(d_logits.download(), dl_r, 1e-5, 1e-6 * scale, tag + " dlogits");
      } else {
        const size_t at = first_diff(d_logits.download(), logits);
        CHECK(at == n, "%s: logits changed at index %zu with dlogits_scale 0", tag.c_str(), at);
      }
    }
}

// AdamW: the CPU's fp32 operations in its order (IEEE division and sqrt, no contraction), so expected bit for
// bit; checked at rtol 1e-6 so that a libm difference in the host's powf would not fail it.
void test_adamw() {
  for (size_t n : {size_t(1), size_t(1000), (size_t(1) << 20) + 1})
    for (int t : {1, 10, 1000}) {
      const auto params0 = gauss_vec(n, 1.0f), m0 = gauss_vec(n, 1e-2f), grads = gauss_vec(n, 1.0f);
      auto v0 = gauss_vec(n, 1e-4f);
      for (auto& x : v0) x = std::fabs(x);
      const float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f, grad_scale = 0.7f;
      std::vector<float> p_r = params0, m_r = m0, v_r = v0;
      adamw_update(p_r.data(), m_r.data(), v_r.data(), grads.data(), n, lr, beta1, beta2, eps, wd, grad_scale, t,
                   &cpu_pool());
      Dev<float> d_p(n), d_m(n), d_v(n), d_g(n);
      d_p.upload(params0);
      d_m.upload(m0);
      d_v.upload(v0);
      d_g.upload(grads);
      cuda::adamw_update(d_p.p, d_m.p, d_v.p, d_g.p, n, lr, beta1, beta2, eps, wd, grad_scale, t, nullptr);
      const std::string tag = fmt("adamw n=%zu t=%d", n, t);
      CHECK_CLOSE(d_p.download(), p_r, 1e-6, 1e-30, tag + " params");
      CHECK_CLOSE(d_m.download(), m_r, 1e-6, 1e-30, tag + " m");
      CHECK_CLOSE(d_v.download(), v_r, 1e-6, 1e-30, tag + " v");
    }
}

// fp64 attention on the engine's layout, causal or not: out (B,T,C), lse (B,NH,T), and the gradients dqkv
// (B,T,3C) of sum(out * dout). The oracle for the non-causal GPU attention (the CPU kernels are causal only).
void attention_ref64(std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dqkv,
                     const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH,
                     bool causal) {
  const int hs = C / NH;
  const size_t C3 = 3 * size_t(C);
  const double scale = 1.0 / std::sqrt(double(hs));
  out.assign(size_t(B) * T * C, 0.0);
  lse.assign(size_t(B) * NH * T, 0.0);
  dqkv.assign(size_t(B) * T * C3, 0.0);
  std::vector<double> P(size_t(T) * T), dP(size_t(T) * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      auto at = [&](int t, int part, int d) { return double(qkv[(size_t(b) * T + t) * C3 + size_t(part) * C + h * hs + d]); };
      auto g = [&](int t, int part, int d) -> double& { return dqkv[(size_t(b) * T + t) * C3 + size_t(part) * C + h * hs + d]; };
      auto dO = [&](int t, int d) { return double(dout[(size_t(b) * T + t) * C + h * hs + d]); };
      for (int i = 0; i < T; ++i) {
        const int n = causal ? i + 1 : T;
        double mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
          double s = 0.0;
          for (int d = 0; d < hs; ++d) s += at(i, 0, d) * at(j, 1, d);
          P[size_t(i) * T + j] = s * scale;
          mx = std::max(mx, s * scale);
        }
        double sum = 0.0;
        for (int j = 0; j < n; ++j) sum += (P[size_t(i) * T + j] = std::exp(P[size_t(i) * T + j] - mx));
        for (int j = 0; j < T; ++j) P[size_t(i) * T + j] = j < n ? P[size_t(i) * T + j] / sum : 0.0;
        lse[(size_t(b) * NH + h) * T + i] = mx + std::log(sum);
        for (int d = 0; d < hs; ++d) {
          double o = 0.0;
          for (int j = 0; j < n; ++j) o += P[size_t(i) * T + j] * at(j, 2, d);
          out[(size_t(b) * T + i) * C + h * hs + d] = o;
        }
        // dP = dO V^T, then dS = P (dP - D) in place, D = sum_j P dP.
        double D = 0.0;
        for (int j = 0; j < n; ++j) {
          double s = 0.0;
          for (int d = 0; d < hs; ++d) s += dO(i, d) * at(j, 2, d);
          dP[size_t(i) * T + j] = s;
          D += P[size_t(i) * T + j] * s;
        }
        for (int j = 0; j < T; ++j) dP[size_t(i) * T + j] = j < n ? P[size_t(i) * T + j] * (dP[size_t(i) * T + j] - D) : 0.0;
      }
      for (int i = 0; i < T; ++i)
        for (int j = 0; j < T; ++j) {
          const double p = P[size_t(i) * T + j], ds = dP[size_t(i) * T + j];
          if (p == 0.0 && ds == 0.0) continue;
          for (int d = 0; d < hs; ++d) {
            g(i, 0, d) += scale * ds * at(j, 1, d);
            g(j, 1, d) += scale * ds * at(i, 0, d);
            g(j, 2, d) += p * dO(i, d);
          }
        }
    }
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }
std::vector<float> bf16_to_floats(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = cuda::bf16_to_float(v[i]);
  return f;
}
// Random bf16 values: the bits for the device and the same values as floats for the references.
void bf16_gauss(std::vector<uint16_t>& bits, std::vector<float>& vals, size_t n, float sigma) {
  bits.resize(n);
  vals.resize(n);
  std::normal_distribution<float> gauss(0.0f, sigma);
  for (size_t i = 0; i < n; ++i) {
    bits[i] = cuda::bf16_from_float(gauss(g_rng));
    vals[i] = cuda::bf16_to_float(bits[i]);
  }
}
// Part `part` (0 q, 1 k, 2 v) of a (B*T, 3C) tensor.
std::vector<float> qkv_part(const std::vector<float>& x, size_t rows, int C, int part) {
  std::vector<float> p(rows * C);
  for (size_t r = 0; r < rows; ++r)
    std::memcpy(&p[r * C], &x[r * 3 * C + size_t(part) * C], sizeof(float) * C);
  return p;
}

// The tensor-core attention kernels need sm_80; on an older device their tests say so and pass.
bool attention_supported() {
  if (g_sm_major >= 8) return true;
  std::printf("    (attention needs sm_80 or later; this device is sm_%d: skipped)\n", g_sm_major * 10);
  return false;
}

// Flash attention, bf16 in and out. The references run on the same bf16-rounded inputs in fp32 (causal: the
// CPU's attention_flash_*) or fp64 (non-causal: attention_ref64). Tolerances, as a fraction of the largest
// |reference| of each tensor (the GPU rounds out and dqkv to bf16, 2^-9 relative, and P and dS to bf16 before
// their products): out 2e-2; dq, dk, dv 3e-2 each, plus 1e-4 absolute (at T = 1, dq and dk are 0 up to
// rounding); lse (fp32, scores accumulated exactly from bf16 products) 1e-3 absolute. T covers one row,
// partial tiles, a tile multiple and several tiles. Run once per B-operand loader of the kernels
// (cuda::set_attention_ldmatrix: ldmatrix.x2.trans, or the 16-bit loads) with the default cp.async pipeline,
// and once (ldmatrix) with the plain staging (cuda::set_attention_pipeline(false)), each its own test.
void test_attention(bool ldmatrix, bool pipeline) {
  if (!attention_supported()) return;
  const bool before = cuda::attention_ldmatrix(), pipeline_before = cuda::attention_pipeline();
  cuda::set_attention_ldmatrix(ldmatrix);
  cuda::set_attention_pipeline(pipeline);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  for (int hs : {64, 128})
    for (int T : {1, 17, 64, 100, 257, 513})
      for (int causal = 1; causal >= 0; --causal) {
        const int B = 2, NH = 2, C = NH * hs;
        const size_t rows = size_t(B) * T, nqkv = rows * 3 * C, nout = rows * C, nlse = size_t(B) * NH * T;
        std::vector<uint16_t> qkv_bits, dout_bits;
        std::vector<float> qkv, dout;
        bf16_gauss(qkv_bits, qkv, nqkv, 1.5f);
        bf16_gauss(dout_bits, dout, nout, 1.0f);

        std::vector<float> out_r(nout), lse_r(nlse), dqkv_r(nqkv);
        if (causal) {
          attention_flash_forward(out_r.data(), lse_r.data(), qkv.data(), B, T, C, NH, &cpu_pool());
          attention_flash_backward(dqkv_r.data(), dout.data(), qkv.data(), out_r.data(), lse_r.data(), B, T, C, NH,
                                   &cpu_pool());
        } else {
          std::vector<double> o64, l64, g64;
          attention_ref64(o64, l64, g64, qkv, dout, B, T, C, NH, false);
          out_r = to_float(o64);
          lse_r = to_float(l64);
          dqkv_r = to_float(g64);
        }

        Dev<uint16_t> d_qkv(nqkv), d_dout(nout), d_out(nout), d_dqkv(nqkv);
        Dev<float> d_lse(nlse), d_delta(nlse);
        d_qkv.upload(qkv_bits);
        d_dout.upload(dout_bits);
        d_out.poison();
        d_dqkv.poison();
        d_lse.poison();
        d_delta.poison();
        void* s = causal ? nullptr : stream;
        cuda::attention_forward(d_out.p, d_lse.p, d_qkv.p, B, T, C, NH, causal != 0, s);
        cuda::attention_backward(d_dqkv.p, d_delta.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, B, T, C, NH, causal != 0, s);
        CUDA_CHECK(cudaDeviceSynchronize());

        const std::string tag = fmt("attention (%s, %s) hs=%d T=%d %s", ldmatrix ? "ldmatrix" : "lds16",
                                    pipeline ? "pipelined" : "plain staging", hs, T, causal ? "causal" : "non-causal");
        CHECK_CLOSE(bf16_to_floats(d_out.download()), out_r, 0.0, 2e-2 * max_abs(out_r), tag + " out");
        CHECK_CLOSE(d_lse.download(), lse_r, 0.0, 1e-3, tag + " lse");
        const auto dqkv = bf16_to_floats(d_dqkv.download());
        const char* names[] = {" dq", " dk", " dv"};
        for (int part = 0; part < 3; ++part) {
          const auto ref = qkv_part(dqkv_r, rows, C, part);
          CHECK_CLOSE(qkv_part(dqkv, rows, C, part), ref, 0.0, 3e-2 * max_abs(ref) + 1e-4, tag + names[part]);
        }
      }
  CUDA_CHECK(cudaStreamDestroy(stream));
  cuda::set_attention_ldmatrix(before);
  cuda::set_attention_pipeline(pipeline_before);
}
void test_attention_ldmatrix() { test_attention(true, true); }
void test_attention_lds16() { test_attention(false, true); }
void test_attention_unpipelined() { test_attention(true, false); }

// One case of the attention agreement tests below: B = 2, NH = 2, bf16 gaussian q/k/v and dout on the device.
struct AttnCase {
  int B = 2, NH = 2, T, C;
  bool causal;
  size_t nqkv, nout, nlse;
  Dev<uint16_t> qkv, dout;
  AttnCase(int hs, int T_, bool causal_)
      : T(T_), C(NH * hs), causal(causal_), nqkv(size_t(B) * T * 3 * C), nout(size_t(B) * T * C), nlse(size_t(B) * NH * T),
        qkv(nqkv), dout(nout) {
    std::vector<uint16_t> qkv_bits, dout_bits;
    std::vector<float> qkv_vals, dout_vals;
    bf16_gauss(qkv_bits, qkv_vals, nqkv, 1.5f);
    bf16_gauss(dout_bits, dout_vals, nout, 1.0f);
    qkv.upload(qkv_bits);
    dout.upload(dout_bits);
  }
};

struct AttnRun {
  std::vector<uint16_t> out, dqkv;
  std::vector<float> lse, delta;
};

// The forward into d_out and d_lse, then the backward (from bwd_out and bwd_lse when given, else from this
// forward's), with every output poisoned first; under whatever switches are set.
AttnRun run_attention(const AttnCase& a, Dev<uint16_t>& d_out, Dev<float>& d_lse, const Dev<uint16_t>* bwd_out = nullptr,
                      const Dev<float>* bwd_lse = nullptr) {
  Dev<uint16_t> d_dqkv(a.nqkv);
  Dev<float> d_delta(a.nlse);
  d_out.poison();
  d_lse.poison();
  d_dqkv.poison();
  d_delta.poison();
  cuda::attention_forward(d_out.p, d_lse.p, a.qkv.p, a.B, a.T, a.C, a.NH, a.causal, nullptr);
  cuda::attention_backward(d_dqkv.p, d_delta.p, a.dout.p, a.qkv.p, (bwd_out ? bwd_out : &d_out)->p,
                           (bwd_lse ? bwd_lse : &d_lse)->p, a.B, a.T, a.C, a.NH, a.causal, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  return {d_out.download(), d_dqkv.download(), d_lse.download(), d_delta.download()};
}

// out, lse, dqkv and delta of two runs, bit for bit.
void check_attention_agree(const std::string& tag, const AttnCase& a, const AttnRun& x, const AttnRun& y) {
  const size_t C = size_t(a.C);
  size_t at = first_diff(x.out, y.out);
  CHECK(at == a.nout, "%s: out differs first at %zu (row %zu, column %zu; %04x vs %04x)", tag.c_str(), at, at / C, at % C,
        at < a.nout ? x.out[at] : 0, at < a.nout ? y.out[at] : 0);
  at = first_diff(x.lse, y.lse);
  CHECK(at == a.nlse, "%s: lse differs first at %zu", tag.c_str(), at);
  at = first_diff(x.dqkv, y.dqkv);
  CHECK(at == a.nqkv, "%s: dqkv differs first at %zu (row %zu, column %zu of 3C; %04x vs %04x)", tag.c_str(), at,
        at / (3 * C), at % (3 * C), at < a.nqkv ? x.dqkv[at] : 0, at < a.nqkv ? y.dqkv[at] : 0);
  at = first_diff(x.delta, y.delta);
  CHECK(at == a.nlse, "%s: delta differs first at %zu", tag.c_str(), at);
}

// The two B loaders hand the tensor cores the same fragments (what the CPU emulation of ldmatrix showed), so
// out, lse, delta and dqkv must agree bit for bit between them: a direct check of the ldmatrix path on the
// device, which the tolerances above cannot give.
void test_attention_loaders_agree() {
  if (!attention_supported()) return;
  const bool before = cuda::attention_ldmatrix();
  for (int hs : {64, 128})
    for (int T : {17, 100, 130})
      for (int causal = 1; causal >= 0; --causal) {
        const AttnCase a(hs, T, causal != 0);
        AttnRun run[2];
        for (int v = 0; v < 2; ++v) {
          cuda::set_attention_ldmatrix(v == 0);
          Dev<uint16_t> d_out(a.nout);
          Dev<float> d_lse(a.nlse);
          run[v] = run_attention(a, d_out, d_lse);
        }
        check_attention_agree(fmt("attention ldmatrix vs lds16 hs=%d T=%d %s", hs, T, causal ? "causal" : "non-causal"), a,
                              run[0], run[1]);
      }
  cuda::set_attention_ldmatrix(before);
}

// The two stagings (cuda::set_attention_pipeline: cp.async double-buffered, or plain loads and stores) put the
// same tiles in front of the same arithmetic (what the CPU emulations of the pipelined forward and backward
// showed), so out and lse (forward), dqkv and delta (backward) must agree bit for bit between them, with either B
// loader; and neither leaves an output unwritten (every output starts poisoned, 0xFF bytes: a NaN). Both
// backwards take the same out and lse (the pipelined forward's). T: one row, partial tiles, a tile multiple, one
// past it, and up to 16 tiles (the double buffers cycled many times).
void test_attention_pipeline_agree() {
  if (!attention_supported()) return;
  const bool before = cuda::attention_ldmatrix(), pipeline_before = cuda::attention_pipeline();
  for (int ldmatrix = 1; ldmatrix >= 0; --ldmatrix)
    for (int hs : {64, 128})
      for (int T : {1, 17, 64, 65, 100, 130, 257, 1000})
        for (int causal = 1; causal >= 0; --causal) {
          const AttnCase a(hs, T, causal != 0);
          cuda::set_attention_ldmatrix(ldmatrix != 0);
          Dev<uint16_t> d_out0(a.nout), d_out1(a.nout);
          Dev<float> d_lse0(a.nlse), d_lse1(a.nlse);
          AttnRun run[2];
          cuda::set_attention_pipeline(true);
          run[0] = run_attention(a, d_out0, d_lse0);
          cuda::set_attention_pipeline(false);
          run[1] = run_attention(a, d_out1, d_lse1, &d_out0, &d_lse0);
          const std::string tag = fmt("attention (%s) pipelined vs plain staging hs=%d T=%d %s",
                                      ldmatrix ? "ldmatrix" : "lds16", hs, T, causal ? "causal" : "non-causal");
          check_attention_agree(tag, a, run[0], run[1]);
          size_t nan_out = 0, nan_lse = 0, nan_dqkv = 0, nan_delta = 0;
          for (uint16_t x : run[0].out) nan_out += (x & 0x7fffu) > 0x7f80u;
          for (float x : run[0].lse) nan_lse += std::isnan(x);
          for (uint16_t x : run[0].dqkv) nan_dqkv += (x & 0x7fffu) > 0x7f80u;
          for (float x : run[0].delta) nan_delta += std::isnan(x);
          CHECK(nan_out == 0 && nan_lse == 0 && nan_dqkv == 0 && nan_delta == 0,
                "%s: NaN in out %zu, lse %zu, dqkv %zu, delta %zu (unwritten or poisoned reads)", tag.c_str(), nan_out,
                nan_lse, nan_dqkv, nan_delta);
        }
  cuda::set_attention_ldmatrix(before);
  cuda::set_attention_pipeline(pipeline_before);
}

// Bad dimensions are refused before anything is launched, naming the argument.
void test_layer_bad_args() {
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string m = message([] { cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 96, 3, true, nullptr); });
  CHECK(m.find("head size") != std::string::npos, "attention head size 32 accepted or misreported: '%s'", m.c_str());
  m = message([] { cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 130, 2, false,
                                            nullptr); });
  CHECK(m.find("head size") != std::string::npos, "attention head size 65 accepted or misreported: '%s'", m.c_str());
  m = message([] { cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 100, 3, true, nullptr); });
  CHECK(m.find("NH") != std::string::npos, "attention C %% NH != 0 accepted or misreported: '%s'", m.c_str());
  m = message([] { cuda::layernorm_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, -1, 8, nullptr); });
  CHECK(m.find("N = -1") != std::string::npos, "layernorm N = -1 accepted or misreported: '%s'", m.c_str());
  m = message([] { cuda::adamw_update(nullptr, nullptr, nullptr, nullptr, 8, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.f, 1.f, 0,
                                      nullptr); });
  CHECK(m.find("t = 0") != std::string::npos, "adamw t = 0 accepted or misreported: '%s'", m.c_str());
  m = message([] { cuda::crossentropy_forward_backward(nullptr, nullptr, nullptr, 4, 0, 1.f, nullptr); });
  CHECK(m.find("V = 0") != std::string::npos, "crossentropy V = 0 accepted or misreported: '%s'", m.c_str());
  // Zero-sized work launches nothing (and so accepts null pointers).
  cuda::gelu_forward(nullptr, nullptr, 0, nullptr);
  cuda::encoder_forward(nullptr, nullptr, nullptr, nullptr, 0, 5, 8, nullptr);
  cuda::attention_forward(nullptr, nullptr, nullptr, 2, 0, 128, 2, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
}


// ---- the CUDA engine (include/covenant/cuda_gemm.h, gpt_cuda.h) ----

// Our GEMM kernel against gemm_ref, every transposition, sizes that do not divide the 64x64 tiles, alpha and
// beta. fp32 with sums in another order: rtol 1e-4, atol 1e-5 x sqrt(K). GpuGemm (cuBLAS where built with it:
// bf16 products) at rtol/atol 2e-2 x sqrt(K).
void test_gemm() {
  const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {64, 64, 16}, {65, 130, 33}, {200, 96, 257}, {128, 768, 64}};
  cuda::GpuGemm lib;
  std::printf("    (GpuGemm uses %s)\n", cuda::gemm_impl_name(lib.impl()));
  for (const auto& s : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (int lib_path = 0; lib_path < 2; ++lib_path) {
          const int M = s[0], N = s[1], K = s[2];
          const Trans TA = ta ? Trans::T : Trans::N, TB = tb ? Trans::T : Trans::N;
          const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
          const auto A = gauss_vec(size_t(ta ? K : M) * lda, 1.0f), B = gauss_vec(size_t(tb ? N : K) * ldb, 1.0f);
          const auto C0 = gauss_vec(size_t(M) * ldc, 1.0f);
          const float alpha = 0.75f, beta = lib_path ? 1.0f : 0.5f;
          std::vector<float> ref = C0;
          gemm_ref(TA, TB, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, ref.data(), ldc);
          Dev<float> dA(A.size()), dB(B.size()), dC(C0.size());
          dA.upload(A);
          dB.upload(B);
          dC.upload(C0);
          if (lib_path) lib.gemm(TA, TB, M, N, K, alpha, dA.p, lda, dB.p, ldb, beta, dC.p, ldc, nullptr);
          else cuda::gemm_own(TA, TB, M, N, K, alpha, dA.p, lda, dB.p, ldb, beta, dC.p, ldc, nullptr);
          const double sk = std::sqrt(double(K));
          const bool bf16 = lib_path && lib.impl() == cuda::GpuGemmImpl::Cublas;
          CHECK_CLOSE(dC.download(), ref, bf16 ? 2e-2 : 1e-4, (bf16 ? 2e-2 : 1e-5) * sk,
                      fmt("gemm %s M=%d N=%d K=%d ta=%d tb=%d", lib_path ? "lib" : "own", M, N, K, ta, tb));
        }
  // beta == 0 ignores C (NaN there must not leak through).
  Dev<float> dA(4), dB(4), dC(4);
  dA.upload({1, 2, 3, 4});
  dB.upload({1, 0, 0, 1});
  dC.poison();  // 0xFF bytes: NaN
  cuda::gemm_own(Trans::N, Trans::N, 2, 2, 2, 1.f, dA.p, 2, dB.p, 2, 0.f, dC.p, 2, nullptr);
  const auto c = dC.download();
  CHECK(c[0] == 1 && c[1] == 2 && c[2] == 3 && c[3] == 4, "gemm_own beta 0: got %g %g %g %g", as_double(c[0]),
        as_double(c[1]), as_double(c[2]), as_double(c[3]));
}

// fp32 attention against the CPU flash attention (causal), any head size: rtol 1e-4 / atol 1e-5 x the
// output scale (fp32, sums in another order).
void test_attention_fp32() {
  const int cases[][4] = {{1, 1, 16, 1}, {2, 17, 64, 4}, {2, 64, 64, 1}, {3, 40, 96, 3}, {1, 130, 128, 1}};
  for (const auto& c : cases) {
    const int B = c[0], T = c[1], C = c[2], NH = c[3];
    const size_t n3 = size_t(B) * T * 3 * C, n = size_t(B) * T * C, nl = size_t(B) * NH * T;
    const auto qkv = gauss_vec(n3, 1.0f), dout = gauss_vec(n, 1.0f);
    std::vector<float> out_r(n), lse_r(nl), dqkv_r(n3);
    attention_flash_forward(out_r.data(), lse_r.data(), qkv.data(), B, T, C, NH, &cpu_pool());
    attention_flash_backward(dqkv_r.data(), dout.data(), qkv.data(), out_r.data(), lse_r.data(), B, T, C, NH,
                             &cpu_pool());
    Dev<float> d_qkv(n3), d_out(n), d_lse(nl), d_dout(n), d_dqkv(n3), d_delta(nl);
    d_qkv.upload(qkv);
    d_dout.upload(dout);
    d_out.poison();
    d_lse.poison();
    d_dqkv.poison();
    cuda::attention_fp32_forward(d_out.p, d_lse.p, d_qkv.p, B, T, C, NH, nullptr);
    cuda::attention_fp32_backward(d_dqkv.p, d_delta.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, B, T, C, NH, nullptr);
    const std::string label = fmt("attention_fp32 B=%d T=%d C=%d NH=%d", B, T, C, NH);
    CHECK_CLOSE(d_out.download(), out_r, 1e-4, 1e-5 * max_abs(out_r), label + " out");
    CHECK_CLOSE(d_lse.download(), lse_r, 1e-5, 1e-5, label + " lse");
    CHECK_CLOSE(d_dqkv.download(), dqkv_r, 1e-4, 1e-5 * max_abs(dqkv_r), label + " dqkv");
  }
}

// (B, T+1) tokens per step from a learnable sequence (a noisy periodic pattern), so the loss falls.
std::vector<int32_t> engine_tokens(int B, int T, int V, int step) {
  std::vector<int32_t> tok(size_t(B) * (T + 1));
  for (int b = 0; b < B; ++b)
    for (int t = 0; t <= T; ++t) {
      const int pos = step * 7 + b * 13 + t;
      int id = (pos * 5 + (pos / 3)) % V;
      if (g_rng() % 10 == 0) id = int(g_rng() % V);
      tok[size_t(b) * (T + 1) + t] = id;
    }
  return tok;
}

// Trains the CPU GPT and GPTCuda side by side from the same seed on the same tokens: the initial parameters
// hash equal; every step's loss within relative 2e-2 of the CPU's and the gradient norm within 5e-2; after
// the run the parameters agree to 2e-2 relative RMS (1e-1 with bf16 in the path); eval loss and logits agree;
// loadParams (upload) of the CPU's parameters makes the hashes equal again.
void engine_run(const char* what, const GPTConfig& cfg, AttentionKind attention, int B, int T, int steps) {
  const uint64_t seed = 1234;
  GPT cpu(cfg, 0, seed);
  GPTCuda gpu(cfg, seed);
  gpu.set_attention(attention);
  std::printf("    (%s: attention %s, gemm %s, V=%d maxT=%d L=%d NH=%d C=%d, B=%d T=%d)\n", what,
              gpu.uses_bf16_attention() ? "bf16 flash" : "fp32", gpu.gemm_name(), cfg.vocab_size, cfg.max_seq_len,
              cfg.num_layers, cfg.num_heads, cfg.channels, B, T);
  CHECK(gpu.num_params() == cpu.num_params(), "%s: num_params %zu vs CPU %zu", what, gpu.num_params(),
        cpu.num_params());
  CHECK(gpu.params_hash() == cpu.params_hash(), "%s: initial parameters differ from the CPU's (hash)", what);
  AdamWConfig opt;
  opt.lr = 3e-3f;
  opt.weight_decay = 0.1f;
  opt.grad_clip = 1.0f;
  float first = 0.f, last = 0.f;
  for (int step = 0; step < steps; ++step) {
    const auto tok = engine_tokens(B, T, cfg.vocab_size, step);
    const StepResult rc = cpu.train_step(tok.data(), B, T, opt);
    const StepResult rg = gpu.train_step(tok.data(), B, T, opt);
    const double dl = std::fabs(double(rg.loss) - rc.loss) / std::fabs(double(rc.loss));
    const double dn = std::fabs(double(rg.grad_norm) - rc.grad_norm) / std::max(1e-12, std::fabs(double(rc.grad_norm)));
    CHECK(dl <= 2e-2, "%s step %d: loss %.6f vs CPU %.6f (relative %.3g > 2e-2)", what, step, as_double(rg.loss),
          as_double(rc.loss), dl);
    CHECK(dn <= 5e-2, "%s step %d: grad norm %.6f vs CPU %.6f (relative %.3g > 5e-2)", what, step,
          as_double(rg.grad_norm), as_double(rc.grad_norm), dn);
    if (step == 0) first = rc.loss;
    last = rc.loss;
    if (step == 0 || step == steps - 1)
      std::printf("    step %2d: loss cpu %.6f gpu %.6f, grad norm cpu %.6f gpu %.6f\n", step, as_double(rc.loss),
                  as_double(rg.loss), as_double(rc.grad_norm), as_double(rg.grad_norm));
  }
  CHECK(last < first, "%s: the loss did not fall (%.6f -> %.6f)", what, as_double(first), as_double(last));
  CHECK(gpu.adam_step() == steps, "%s: adam_step %d after %d steps", what, gpu.adam_step(), steps);

  const auto pg = gpu.host_copy(GPTCuda::Buffer::Params);
  double se = 0.0, sr = 0.0;
  for (size_t i = 0; i < cpu.num_params(); ++i) {
    const double d = double(pg.get()[i]) - cpu.params()[i];
    se += d * d;
    sr += double(cpu.params()[i]) * cpu.params()[i];
  }
  // AdamW turns small gradient differences on near-zero gradients into whole steps, so bf16 (attention or
  // cuBLAS GEMMs) gets a looser bound than fp32.
  const bool bf16 = gpu.uses_bf16_attention() || cuda::gemm_have_cublas();
  const double rel_rms = std::sqrt(se / std::max(sr, 1e-30)), rms_tol = bf16 ? 1e-1 : 2e-2;
  CHECK(rel_rms <= rms_tol, "%s: parameters after %d steps differ from the CPU's by relative RMS %.3g (> %.0e)", what,
        steps, rel_rms, rms_tol);

  const auto tok = engine_tokens(B, T, cfg.vocab_size, steps);
  const float ec = cpu.eval_loss(tok.data(), B, T), eg = gpu.eval_loss(tok.data(), B, T);
  CHECK(std::fabs(double(eg) - ec) <= 2e-2 * std::fabs(double(ec)), "%s: eval loss %.6f vs CPU %.6f", what,
        as_double(eg), as_double(ec));

  // Same parameters on both: logits agree, and the hash is the CPU's.
  gpu.upload(GPTCuda::Buffer::Params, cpu.params());
  CHECK(gpu.params_hash() == cpu.params_hash(), "%s: hash after loading the CPU's parameters differs", what);
  std::vector<int32_t> inputs(size_t(B) * T);
  for (size_t i = 0; i < inputs.size(); ++i) inputs[i] = tok[i / T * (T + 1) + i % T];
  std::vector<float> lc(inputs.size() * cfg.vocab_size), lg(lc.size());
  cpu.logits(lc.data(), inputs.data(), B, T);
  gpu.logits(lg.data(), inputs.data(), B, T);
  CHECK_CLOSE(lg, lc, bf16 ? 5e-2 : 1e-3, (bf16 ? 5e-2 : 1e-3) * max_abs(lc), fmt("%s logits", what));
  const auto gen_c = cpu.generate({1, 2, 3}, 5, 0.f, 0, 7);
  const auto gen_g = gpu.generate({1, 2, 3}, 5, 0.f, 0, 7);
  CHECK(gen_g.size() == 5, "%s: generate produced %zu tokens", what, gen_g.size());
  if (!bf16) CHECK(gen_g == gen_c, "%s: greedy generation differs from the CPU's", what);
}

// The `tiny` preset (src/train/model-config.ts: maxT 64, L 2, NH 4, C 64; head size 16, so fp32 attention),
// V 512, 20 steps.
void test_engine_tiny() {
  GPTConfig cfg;
  cfg.vocab_size = 512;
  cfg.max_seq_len = 64;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.channels = 64;
  engine_run("tiny", cfg, AttentionKind::Flash, 4, 64, 20);
}

// Head size 64: the bf16 flash attention kernels on sm_80+ (fp32 elsewhere), then the same model with the
// fp32 attention ('naive').
void test_engine_bf16_attention() {
  GPTConfig cfg;
  cfg.vocab_size = 384;
  cfg.max_seq_len = 96;
  cfg.num_layers = 2;
  cfg.num_heads = 2;
  cfg.channels = 128;
  engine_run("hs64 flash", cfg, AttentionKind::Flash, 3, 80, 20);
  engine_run("hs64 naive", cfg, AttentionKind::Naive, 3, 80, 5);
}

// cuda::difference against the host's fp32 subtraction, bit for bit, on quant_data's mix (subnormals, zeros,
// values near FLT_MAX, so some differences overflow to +-Inf as on the host).
void test_difference() {
  for (size_t n : {size_t(0), size_t(1), size_t(1000), size_t(1000003)}) {
    const auto a = quant_data(n, 128), b = quant_data(n, 97);
    std::vector<float> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = a[i] - b[i];
    Dev<float> da(n), db(n), dout(n);
    da.upload(a);
    db.upload(b);
    dout.poison();
    cuda::difference(dout.p, da.p, db.p, n, nullptr);
    const size_t at = first_diff(dout.download(), want);
    CHECK(at == n, "difference n=%zu: mismatch at index %zu", n, at);
  }
}

// GPT's and GPTCuda's round delta, three rounds (blocks 128, 64, 37): both engines start each round from the
// same parameters and mark it, train on their own (their steps differ in rounding), then get the CPU engine's
// parameters uploaded so θ_now is equal too; codes, scales and residual must equal the host path's bit for bit
// (host outputs poisoned before each call). Then the refusals: a NaN Δ names the CPU's index and keeps the
// residual, a non-finite residual load changes nothing, compress before any mark is a std::logic_error.
void test_engine_round_delta() {
  GPTConfig cfg;  // the `tiny` preset, V 512
  cfg.vocab_size = 512;
  cfg.max_seq_len = 64;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.channels = 64;
  const int B = 4, T = 64;
  GPT cpu(cfg, 0, 99);
  GPTCuda gpu(cfg, 99);
  const size_t n = cpu.num_params();
  AdamWConfig opt;
  opt.lr = 3e-3f;
  opt.weight_decay = 0.1f;
  std::vector<float> residual(n, 0.0f);  // the host path's, carried over rounds
  const int blocks[3] = {128, 64, 37};
  for (int round = 0; round < 3; ++round) {
    const int block = blocks[round];
    const size_t nb = quant_num_blocks(n, block);
    gpu.upload(GPTCuda::Buffer::Params, cpu.params());
    cpu.mark_round_start();
    gpu.mark_round_start();
    const std::vector<float> start(cpu.params(), cpu.params() + n);
    for (int step = 0; step < 3; ++step) {
      const auto tok = engine_tokens(B, T, cfg.vocab_size, 10 * round + step);
      cpu.train_step(tok.data(), B, T, opt);
      gpu.train_step(tok.data(), B, T, opt);
    }
    gpu.upload(GPTCuda::Buffer::Params, cpu.params());

    std::vector<float> delta(n);
    for (size_t i = 0; i < n; ++i) delta[i] = start[i] - cpu.params()[i];
    const std::vector<float> before = residual;
    ErrorFeedbackCompressor ref(n, block);
    ref.load_residual(residual.data());
    std::vector<int8_t> q_ref(n);
    std::vector<float> s_ref(nb);
    ref.compress(q_ref.data(), s_ref.data(), delta.data(), nullptr, QuantIsa::Scalar);
    residual.assign(ref.residual(), ref.residual() + n);

    std::vector<int8_t> q_cpu(n, int8_t(-1)), q_gpu(n, int8_t(-1));
    std::vector<float> s_cpu(nb), s_gpu(nb), r_cpu(n), r_gpu(n);
    for (auto* v : {&s_cpu, &s_gpu, &r_cpu, &r_gpu}) std::memset(v->data(), 0xFF, v->size() * sizeof(float));
    cpu.compress_delta(q_cpu.data(), s_cpu.data(), block);
    gpu.compress_delta(q_gpu.data(), s_gpu.data(), block);
    cpu.copy_delta_residual(r_cpu.data());
    gpu.copy_delta_residual(r_gpu.data());
    const size_t nonzero = n - size_t(std::count(q_ref.begin(), q_ref.end(), int8_t(0)));
    CHECK(nonzero > n / 4, "round %d: only %zu of %zu codes are nonzero (Δ is degenerate)", round, nonzero, n);
    size_t at = first_diff(q_gpu, q_ref);
    CHECK(at == n, "round %d block %d: GPU codes differ from the host path at %zu", round, block, at);
    at = first_diff(s_gpu, s_ref);
    CHECK(at == nb, "round %d block %d: GPU scales differ from the host path at block %zu", round, block, at);
    at = first_diff(r_gpu, residual);
    CHECK(at == n, "round %d block %d: GPU residual differs from the host path at %zu", round, block, at);
    CHECK(first_diff(q_cpu, q_ref) == n && first_diff(s_cpu, s_ref) == nb && first_diff(r_cpu, residual) == n,
          "round %d block %d: the CPU engine's round delta differs from the host path", round, block);
    if (first_diff(r_gpu, residual) != n) gpu.load_delta_residual(residual.data());  // keep later rounds comparable
    // A round that does not commit gives its Δ back: undo restores the residual from before, once.
    CHECK(gpu.undo_compress_delta() && !gpu.undo_compress_delta(), "round %d: undo_compress_delta not exactly once", round);
    std::fill(r_gpu.begin(), r_gpu.end(), -1.0f);
    gpu.copy_delta_residual(r_gpu.data());
    at = first_diff(r_gpu, before);
    CHECK(at == n, "round %d: the GPU residual after undo differs from the one before at %zu", round, at);
    gpu.load_delta_residual(residual.data());
  }

  // A NaN Δ: the same index as the CPU engine, the residual kept.
  std::vector<float> poisoned(cpu.params(), cpu.params() + n);
  const size_t at = 1000 + g_rng() % (n - 2000);
  poisoned[at] = NAN;
  std::copy(poisoned.begin(), poisoned.end(), cpu.params());
  gpu.upload(GPTCuda::Buffer::Params, poisoned.data());
  std::vector<int8_t> q(n);
  std::vector<float> s(quant_num_blocks(n, 64)), r(n);
  size_t cpu_index = SIZE_MAX, gpu_index = SIZE_MAX;
  try {
    cpu.compress_delta(q.data(), s.data(), 64);
  } catch (const NonFiniteError& e) {
    cpu_index = e.index();
  }
  try {
    gpu.compress_delta(q.data(), s.data(), 64);
  } catch (const NonFiniteError& e) {
    gpu_index = e.index();
    CHECK(!e.sum_overflow(), "round delta: a NaN Δ reported as an overflowing sum");
  }
  CHECK(gpu_index == at && cpu_index == at, "round delta: NaN at %zu named %zu on the GPU, %zu on the CPU", at,
        gpu_index, cpu_index);
  gpu.copy_delta_residual(r.data());
  CHECK(first_diff(r, residual) == n, "round delta: a refused compress changed the GPU residual");
  cpu.copy_delta_residual(r.data());
  CHECK(first_diff(r, residual) == n, "round delta: a refused compress changed the CPU residual");

  // A non-finite residual load changes nothing; reset zeroes it.
  std::vector<float> bad_r(n, 1.0f);
  bad_r[7] = INFINITY;
  bool refused = false;
  try {
    gpu.load_delta_residual(bad_r.data());
  } catch (const NonFiniteError& e) {
    refused = e.index() == 7;
  }
  gpu.copy_delta_residual(r.data());
  CHECK(refused && first_diff(r, residual) == n, "round delta: a residual with Inf at 7 was not refused cleanly");
  gpu.reset_delta_residual();
  gpu.copy_delta_residual(r.data());
  CHECK(std::all_of(r.begin(), r.end(), [](float v) { return v == 0.0f && !std::signbit(v); }),
        "round delta: reset left a nonzero residual");

  GPTCuda fresh(cfg, 1);
  std::string m;
  try {
    fresh.compress_delta(q.data(), s.data(), 64);
  } catch (const std::logic_error& e) {
    m = e.what();
  }
  CHECK(m.find("markRoundStart") != std::string::npos, "compress before any mark accepted or misreported: '%s'",
        m.c_str());
}

// Token ids outside the vocabulary and T > maxT are refused on the host before any launch.
void test_engine_bad_args() {
  GPTConfig cfg;
  cfg.vocab_size = 16;
  cfg.max_seq_len = 8;
  cfg.num_layers = 1;
  cfg.num_heads = 1;
  cfg.channels = 16;
  GPTCuda gpu(cfg, 1);
  std::vector<int32_t> tok(9, 3);
  tok[4] = 16;
  std::string m;
  try {
    gpu.eval_loss(tok.data(), 1, 8);
  } catch (const std::out_of_range& e) {
    m = e.what();
  }
  CHECK(m.find("token id 16") != std::string::npos, "token 16 >= V accepted or misreported: '%s'", m.c_str());
  m.clear();
  std::vector<int32_t> long_tok(10, 1);
  try {
    gpu.eval_loss(long_tok.data(), 1, 9);
  } catch (const std::invalid_argument& e) {
    m = e.what();
  }
  CHECK(m.find("maxSeqLen") != std::string::npos, "T > maxT accepted or misreported: '%s'", m.c_str());
  cfg.num_heads = 2;
  cfg.channels = 15;
  m.clear();
  try {
    GPTCuda bad(cfg, 1);
  } catch (const std::invalid_argument& e) {
    m = e.what();
  }
  CHECK(m.find("divisible") != std::string::npos, "channels 15 with 2 heads accepted or misreported: '%s'", m.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("GPU suite skipped: no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorName(err) : "0 devices");
    return 0;
  }
  const char* env = std::getenv("COVENANT_GPU_TEST_SEED");
  const unsigned long long seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  g_rng.seed(seed);
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  g_sm_major = prop.major;
  std::printf("GPU suite on %s (sm_%d%d), seed %llu (repeat with COVENANT_GPU_TEST_SEED=%llu)\n", prop.name,
              prop.major, prop.minor, seed, seed);
  const covenant_test::Test tests[] = {
      {"gpu_quantize", test_quantize},
      {"gpu_dequantize", test_dequantize},
      {"gpu_error_feedback", test_error_feedback},
      {"gpu_bad_input", test_bad_input},
      {"gpu_encoder", test_encoder},
      {"gpu_layernorm", test_layernorm},
      {"gpu_gelu", test_gelu},
      {"gpu_crossentropy", test_crossentropy},
      {"gpu_adamw", test_adamw},
      {"gpu_attention_ldmatrix", test_attention_ldmatrix},
      {"gpu_attention_lds16", test_attention_lds16},
      {"gpu_attention_unpipelined", test_attention_unpipelined},
      {"gpu_attention_loaders_agree", test_attention_loaders_agree},
      {"gpu_attention_pipeline_agree", test_attention_pipeline_agree},
      {"gpu_layer_bad_args", test_layer_bad_args},
      {"gpu_gemm", test_gemm},
      {"gpu_attention_fp32", test_attention_fp32},
      {"gpu_engine_tiny", test_engine_tiny},
      {"gpu_engine_bf16_attention", test_engine_bf16_attention},
      {"gpu_difference", test_difference},
      {"gpu_engine_bad_args", test_engine_bad_args},
      {"gpu_engine_round_delta", test_engine_round_delta},
  };
  return covenant_test::run_tests(tests, argc, argv);
}

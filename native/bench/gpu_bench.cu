// covenant_native_gpu_bench: the CUDA half of `npm run bench -- attention` and `quant` (bench/gpu-bench.ts
// drives it), beside covenant_native_bench (the CPU half, native/bench/main.cpp), with the same conventions:
// each subcommand checks the kernels it times against a host reference first, then prints one JSON object per
// line (a row) on stdout; progress and errors go to stderr. Built only where CMake finds nvcc.
//
//   covenant_native_gpu_bench info
//   covenant_native_gpu_bench attention [--B 8] [--T 1024,4096] [--C 2048] [--hs 64,128] [--min-seconds S]
//   covenant_native_gpu_bench quant     [--mib 256] [--block 128] [--min-seconds S]
//
// Without a usable CUDA device (no driver, no device) every subcommand prints the single row
// {"skipped":"no CUDA device: <reason>"} and exits 0; attention on a device below compute capability 8.0
// prints {"skipped":"..."} likewise. Bad options exit 2 with a message, as does a kernel that fails its check.
//
// Timing: device time from cudaEvents recorded on one stream around each call. One untimed warm-up call, then
// repetitions until at least --min-seconds (default 0.3 s) of timed work and at least 3 reps; `seconds` is the
// median rep, `seconds_min` the fastest.
//
// attention: cuda::attention_forward / attention_backward (include/covenant/cuda_kernels.h), bf16, for each
// head size hs in --hs with NH = C/hs heads, each T, causal and not, and each of the kernels' two B-operand
// loaders (cuda::set_attention_ldmatrix), timed one after the other per case; each pass with each of the two
// stagings (cuda::set_attention_pipeline). Rows: impl 'covenant', pass 'fwd' or 'bwd' (the backward alone, on
// the forward's out and lse), b_loader 'ldmatrix' (ldmatrix.x2.trans, the default) or 'lds16' (two 16-bit
// shared loads per register), pipeline true (the streamed tiles by cp.async, double-buffered, the default) or
// false (plain loads and stores, one buffer). FLOPs: forward 4*B*NH*T^2*hs (the two (T,T,hs)
// matmuls QK^T and PV), halved when causal; backward 2.5x the forward (five matmuls against two). Softmax and
// exp are not counted. tflops = flops / seconds / 1e12.
//
// quant: cuda::quantize_int8 / dequantize_int8 / dequantize_accumulate_int8 / error_feedback_step
// (include/covenant/cuda_quant.h) over --mib MiB of fp32 at block --block, beside the limit: a device-to-device
// cudaMemcpy of the same fp32 bytes (impl 'limit', op 'memcpy'). As on the CPU, `bytes` is the fp32 size (n*4)
// for every row so GBps compares directly with the copy's; `traffic_bytes` counts every byte read or written.
// The quantization calls are blocking (each reads back a bad-input flag); their times include that.
//
// Every row carries device 'cuda' (the CPU rows in the same bench/out/NAME.json have no device key).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/cuda_check.h"
#include "../core/device_buffer.h"
#include "covenant/cuda_kernels.h"
#include "covenant/cuda_quant.h"
#include "covenant/quant.h"
#include "bench_io.h"

using namespace covenant;
using namespace covenant::bench;

namespace {

// Rows carry device 'cuda'.
Row cuda_row() {
  Row r;
  r.str("device", "cuda");
  return r;
}

void print_skipped(const std::string& why) { std::printf("{\"skipped\":\"%s\"}\n", json_escape(why).c_str()); }

// ---------------------------------------------------------------------------------------------------------
// Device memory and timing.


struct Timing {
  double median = 0, min = 0;
  int reps = 0;
};

// One warm-up call, then reps until both min_seconds of timed device work and min_reps are reached. Each rep is
// timed by two events on `stream` around fn (which enqueues its work there), then synchronized.
Timing time_device(const std::function<void()>& fn, cudaStream_t stream, double min_seconds, int min_reps = 3,
                   int max_reps = 10000) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  fn();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ts;
  double total = 0;
  while ((total < min_seconds || (int)ts.size() < min_reps) && (int)ts.size() < max_reps) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    ts.push_back(ms * 1e-3);
    total += ms * 1e-3;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ts.begin(), ts.end());
  const size_t n = ts.size();
  Timing t;
  t.median = n % 2 ? ts[n / 2] : 0.5 * (ts[n / 2 - 1] + ts[n / 2]);
  t.min = ts[0];
  t.reps = (int)n;
  return t;
}

// A uniform value in [-1, 1) from (seed, i): splitmix64, so fills need no host data and no device RNG state.
__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_bf16_kernel(uint16_t* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(scale * hash_uniform(seed, i)));
}

__global__ void fill_f32_kernel(float* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = scale * hash_uniform(seed, i);
}

// p (n) = scale * uniform[-1, 1), rounded to bf16.
void fill_bf16(uint16_t* p, size_t n, uint64_t seed, float scale) {
  fill_bf16_kernel<<<4096, 256>>>(p, n, seed, scale);
  CUDA_CHECK_LAUNCH("fill_bf16_kernel");
}
void fill_f32(float* p, size_t n, uint64_t seed, float scale) {
  fill_f32_kernel<<<4096, 256>>>(p, n, seed, scale);
  CUDA_CHECK_LAUNCH("fill_f32_kernel");
}

// "no CUDA device: <reason>", or empty where device 0 is usable.
std::string no_device_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  }
  if (count == 0) return "no CUDA device: the driver reports 0 devices";
  return "";
}

// ---------------------------------------------------------------------------------------------------------
// info: the device the rows were measured on, for the bench's machine record.

int cmd_info() {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  cuda_row()
      .str("kind", "info")
      .str("name", prop.name)
      .integer("device_count", count)
      .integer("sm_count", prop.multiProcessorCount)
      .str("compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor))
      .integer("memory_bytes", (long long)prop.totalGlobalMem)
      .integer("l2_bytes", prop.l2CacheSize)
      .integer("driver_version", driver)
      .integer("runtime_version", runtime)
      .print();
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// attention

// The fp64 host reference on bf16-valued floats: out (B,T,C), lse (B,NH,T), dqkv (B,T,3C) from qkv (B,T,3C)
// and dout (B,T,C). Plain loops, O(T^2 hs) per head: only for the small check below.
void attention_ref64(std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dqkv,
                     const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH,
                     bool causal) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt((double)hs);
  out.assign((size_t)B * T * C, 0.0);
  lse.assign((size_t)B * NH * T, 0.0);
  dqkv.assign((size_t)B * T * 3 * C, 0.0);
  std::vector<double> p(T), dp(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      auto q = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + h * hs + d]; };
      auto k = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + C + h * hs + d]; };
      auto v = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + 2 * C + h * hs + d]; };
      auto g = [&](int t, int part, int d) -> double& { return dqkv[((size_t)b * T + t) * 3 * C + part * C + h * hs + d]; };
      for (int i = 0; i < T; ++i) {
        const int last = causal ? i : T - 1;
        double m = -INFINITY;
        for (int j = 0; j <= last; ++j) {
          double s = 0;
          for (int d = 0; d < hs; ++d) s += q(i, d) * k(j, d);
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int j = 0; j <= last; ++j) sum += (p[j] = std::exp(p[j] - m));
        for (int j = 0; j <= last; ++j) p[j] /= sum;
        lse[((size_t)b * NH + h) * T + i] = m + std::log(sum);
        double* o = &out[((size_t)b * T + i) * C + h * hs];
        for (int j = 0; j <= last; ++j)
          for (int d = 0; d < hs; ++d) o[d] += p[j] * v(j, d);
        // backward of row i: dv_j += p_j dO_i; dS_j = p_j (dO_i.v_j - dO_i.o_i); dq_i += scale dS_j k_j;
        // dk_j += scale dS_j q_i
        const float* dO = &dout[((size_t)b * T + i) * C + h * hs];
        double D = 0;
        for (int d = 0; d < hs; ++d) D += dO[d] * o[d];
        for (int j = 0; j <= last; ++j) {
          double s = 0;
          for (int d = 0; d < hs; ++d) s += dO[d] * v(j, d);
          dp[j] = p[j] * (s - D);
        }
        for (int j = 0; j <= last; ++j)
          for (int d = 0; d < hs; ++d) {
            g(i, 0, d) += scale * dp[j] * k(j, d);
            g(j, 1, d) += scale * dp[j] * q(i, d);
            g(j, 2, d) += p[j] * dO[d];
          }
      }
    }
}

// max |a - b| over max |b| (1 where b is all zero); NaN in a counts as infinitely wrong.
double rel_max_err(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0, ref = 0;
  for (size_t i = 0; i < b.size(); ++i) ref = std::max(ref, std::fabs(b[i]));
  for (size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::isnan(a[i]) ? INFINITY : std::fabs(a[i] - b[i]));
  return worst / (ref > 0 ? ref : 1.0);
}

std::vector<float> bf16_floats(const std::vector<uint16_t>& bits) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) f[i] = cuda::bf16_to_float(bits[i]);
  return f;
}

// One small case (B = 1, NH = 2, T = 200: partial tiles) against attention_ref64 before anything is timed, with
// the B loader and the forward staging currently set. Tolerances as the GPU suite's (native/tests/gpu_tests.cu):
// out 2e-2, dqkv 3e-2 of the largest |reference|, lse 1e-3 absolute.
void check_attention(int hs, bool causal, cudaStream_t stream) {
  const int B = 1, NH = 2, C = NH * hs, T = 200;
  const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
  Dev<uint16_t> qkv(nqkv), dout(nout), out(nout), dqkv(nqkv);
  Dev<float> lse(nlse), delta(nlse);
  fill_bf16(qkv.p, nqkv, 7 + hs, 1.5f);
  fill_bf16(dout.p, nout, 8 + hs, 1.0f);
  cuda::attention_forward(out.p, lse.p, qkv.p, B, T, C, NH, causal, stream);
  cuda::attention_backward(dqkv.p, delta.p, dout.p, qkv.p, out.p, lse.p, B, T, C, NH, causal, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> out_r, lse_r, dqkv_r;
  attention_ref64(out_r, lse_r, dqkv_r, bf16_floats(qkv.download(nqkv)), bf16_floats(dout.download(nout)), B, T, C,
                  NH, causal);
  const double e_out = rel_max_err(bf16_floats(out.download(nout)), out_r);
  const double e_dqkv = rel_max_err(bf16_floats(dqkv.download(nqkv)), dqkv_r);
  const std::vector<float> lse_g = lse.download(nlse);
  double e_lse = 0;
  for (size_t i = 0; i < nlse; ++i) e_lse = std::max(e_lse, std::isnan(lse_g[i]) ? INFINITY : std::fabs(lse_g[i] - lse_r[i]));
  const std::string tag = "hs=" + std::to_string(hs) + (causal ? " causal" : " non-causal") +
                          (cuda::attention_ldmatrix() ? " (ldmatrix" : " (lds16") +
                          (cuda::attention_pipeline() ? ", pipelined)" : ", plain staging)");
  if (!(e_out < 2e-2 && e_dqkv < 3e-2 && e_lse < 1e-3))
    fail("attention " + tag + " disagrees with the fp64 reference at B=1 T=200 NH=2: out error " +
         std::to_string(e_out) + " (tolerance 2e-2), dqkv error " + std::to_string(e_dqkv) + " (3e-2), lse error " +
         std::to_string(e_lse) + " (1e-3); not timing it. HINT: run covenant_native_gpu_tests gpu_attention");
  std::fprintf(stderr, "attention: %s agrees with the fp64 reference (out %.2g, dqkv %.2g, lse %.2g)\n", tag.c_str(),
               e_out, e_dqkv, e_lse);
}

struct AttentionOptions {
  double min_seconds;
  int B, C;
  std::vector<int> Ts, head_sizes;
};

// Read and checked before the device is looked for, so bad options fail alike with and without one.
AttentionOptions attention_options(const Args& args) {
  AttentionOptions o;
  o.min_seconds = args.real("min-seconds", 0.3, 0.0, 60);
  o.B = (int)args.integer("B", 8, 1, 1 << 16);
  o.C = (int)args.integer("C", 2048, 64, 1 << 16);
  o.Ts = args.int_list("T", {1024, 4096}, 1, 1 << 20);
  o.head_sizes = args.int_list("hs", {64, 128}, 64, 128);
  for (int hs : o.head_sizes)
    if ((hs != 64 && hs != 128) || o.C % hs)
      fail("expected head sizes 64 or 128 that divide --C " + std::to_string(o.C) + " for --hs but received " +
           std::to_string(hs));
  return o;
}

int cmd_attention(const AttentionOptions& o) {
  const double min_seconds = o.min_seconds;
  const int B = o.B, C = o.C;
  const std::vector<int>& Ts = o.Ts;
  const std::vector<int>& head_sizes = o.head_sizes;

  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major < 8) {
    print_skipped(std::string("attention needs compute capability 8.0 or later (bf16 tensor cores); ") + prop.name +
                  " is " + std::to_string(prop.major) + "." + std::to_string(prop.minor));
    return 0;
  }
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  const bool default_loader = cuda::attention_ldmatrix(), default_pipeline = cuda::attention_pipeline();
  for (bool ldmatrix : {true, false})
    for (bool pipeline : {true, false}) {
      cuda::set_attention_ldmatrix(ldmatrix);
      cuda::set_attention_pipeline(pipeline);
      for (int hs : head_sizes)
        for (bool causal : {true, false}) check_attention(hs, causal, stream);
    }

  // One set of buffers for the largest T: qkv, dqkv (B,T,3C); out, dout (B,T,C); lse, delta (B,NH,T) with NH
  // at most C/64.
  const int Tmax = *std::max_element(Ts.begin(), Ts.end());
  const size_t rows = (size_t)B * Tmax;
  Dev<uint16_t> qkv(rows * 3 * C), dqkv(rows * 3 * C), out(rows * C), dout(rows * C);
  Dev<float> lse((size_t)B * (C / 64) * Tmax), delta((size_t)B * (C / 64) * Tmax);
  fill_bf16(qkv.p, qkv.n, 21, 1.5f);
  fill_bf16(dout.p, dout.n, 22, 1.0f);
  CUDA_CHECK(cudaDeviceSynchronize());

  for (int hs : head_sizes) {
    const int NH = C / hs;
    for (int T : Ts)
      for (bool causal : {true, false}) {
        const double fwd_flops = 4.0 * B * NH * (double)T * T * hs * (causal ? 0.5 : 1.0);
        auto fwd = [&] { cuda::attention_forward(out.p, lse.p, qkv.p, B, T, C, NH, causal, stream); };
        auto bwd = [&] {
          cuda::attention_backward(dqkv.p, delta.p, dout.p, qkv.p, out.p, lse.p, B, T, C, NH, causal, stream);
        };
        struct Pass {
          const char* pass;
          std::function<void()> fn;
          double flops;
          bool pipeline;  // the staging: cp.async double-buffered, or plain
        };
        // The plain forward first, so the pipelined (default) one leaves the out and lse the bwds read (the same
        // bits either way).
        const Pass passes[] = {{"fwd", fwd, fwd_flops, false},
                               {"fwd", fwd, fwd_flops, true},
                               {"bwd", bwd, 2.5 * fwd_flops, false},
                               {"bwd", bwd, 2.5 * fwd_flops, true}};
        for (bool ldmatrix : {true, false}) {
          cuda::set_attention_ldmatrix(ldmatrix);
          for (const Pass& p : passes) {
            cuda::set_attention_pipeline(p.pipeline);
            const Timing t = time_device(p.fn, stream, min_seconds);
            Row row = cuda_row();
            row.str("impl", "covenant").str("op", "attention").str("dtype", "bf16").str("pass", p.pass)
                .str("b_loader", ldmatrix ? "ldmatrix" : "lds16").boolean("pipeline", p.pipeline);
            row.integer("B", B).integer("T", T).integer("C", C).integer("NH", NH).integer("hs", hs)
                .boolean("causal", causal)
                .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
                .num("flops", p.flops).num("tflops", p.flops / t.median / 1e12)
                .print();
          }
        }
      }
  }
  cuda::set_attention_ldmatrix(default_loader);
  cuda::set_attention_pipeline(default_pipeline);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// quant

// quantize and dequantize on the device against quantize_int8_ref / dequantize_int8_ref on the first m
// elements of x, bit for bit (the contract of cuda_quant.h).
void check_quant(const float* x, size_t m, int block, cudaStream_t stream) {
  const size_t nb = quant_num_blocks(m, block);
  Dev<int8_t> q(m);
  Dev<float> s(nb), d(m);
  cuda::quantize_int8(q.p, s.p, x, m, block, stream);
  cuda::dequantize_int8(d.p, q.p, s.p, m, block, stream);
  std::vector<float> xh(m), sr(nb), dr(m);
  std::vector<int8_t> qr(m);
  CUDA_CHECK(cudaMemcpy(xh.data(), x, m * sizeof(float), cudaMemcpyDeviceToHost));
  quantize_int8_ref(qr.data(), sr.data(), xh.data(), m, block);
  dequantize_int8_ref(dr.data(), qr.data(), sr.data(), m, block);
  const auto qg = q.download(m);
  const auto sg = s.download(nb);
  const auto dg = d.download(m);
  if (std::memcmp(qg.data(), qr.data(), m) || std::memcmp(sg.data(), sr.data(), nb * 4) ||
      std::memcmp(dg.data(), dr.data(), m * 4))
    fail("quant: the CUDA kernels disagree with the scalar reference at block " + std::to_string(block) +
         "; not timing them. HINT: run covenant_native_gpu_tests gpu_quantize");
  std::fprintf(stderr, "quant: CUDA kernels match the scalar reference bit for bit (%zu elements, block %d)\n", m, block);
}

struct QuantOptions {
  double min_seconds;
  long mib;
  int block;
};

QuantOptions quant_options(const Args& args) {
  QuantOptions o;
  o.min_seconds = args.real("min-seconds", 0.3, 0.0, 60);
  o.mib = args.integer("mib", 256, 1, 1 << 16);
  o.block = (int)args.integer("block", 128, 1, 1 << 20);
  return o;
}

int cmd_quant(const QuantOptions& o) {
  const double min_seconds = o.min_seconds;
  const long mib = o.mib;
  const int block = o.block;
  const size_t n = (size_t)mib * (1u << 20) / 4, bytes = n * 4, nb = quant_num_blocks(n, block);
  const double code_bytes = (double)n + 4.0 * nb;

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  Dev<float> x(n), dst(n), acc(n), residual(n), scales(nb);
  Dev<int8_t> q(n);
  fill_f32(x.p, n, 31, 1.0f);
  CUDA_CHECK(cudaMemset(acc.p, 0, bytes));
  CUDA_CHECK(cudaMemset(residual.p, 0, bytes));
  CUDA_CHECK(cudaDeviceSynchronize());
  check_quant(x.p, std::min(n, (size_t)1 << 22), block, stream);

  {
    const Timing t = time_device(
        [&] { CUDA_CHECK(cudaMemcpyAsync(dst.p, x.p, bytes, cudaMemcpyDeviceToDevice, stream)); }, stream, min_seconds);
    cuda_row().str("impl", "limit").str("op", "memcpy").integer("n", (long long)n).integer("bytes", (long long)bytes)
        .integer("traffic_bytes", (long long)(2 * bytes))
        .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
        .num("GBps", bytes / t.median / 1e9).num("traffic_GBps", 2 * bytes / t.median / 1e9).print();
  }
  struct Op {
    const char* op;
    std::function<void()> fn;
    double traffic;
  };
  const Op ops[] = {
      {"quantize", [&] { cuda::quantize_int8(q.p, scales.p, x.p, n, block, stream); }, bytes + code_bytes},
      {"dequantize", [&] { cuda::dequantize_int8(dst.p, q.p, scales.p, n, block, stream); }, code_bytes + bytes},
      {"dequantize_accumulate", [&] { cuda::dequantize_accumulate_int8(acc.p, q.p, scales.p, n, block, stream); },
       code_bytes + 2 * bytes},
      // pass 1 reads input and residual; pass 2 reads them again and writes codes, scales and residual
      {"compress", [&] { cuda::error_feedback_step(q.p, scales.p, residual.p, x.p, n, block, stream); },
       2 * bytes + 3 * bytes + code_bytes},
  };
  for (const Op& o : ops) {
    const Timing t = time_device(o.fn, stream, min_seconds);
    cuda_row().str("impl", "covenant").str("op", o.op).integer("block", block).integer("n", (long long)n)
        .integer("bytes", (long long)bytes).integer("traffic_bytes", (long long)o.traffic)
        .num("seconds", t.median).num("seconds_min", t.min).integer("reps", t.reps)
        .num("GBps", bytes / t.median / 1e9).num("traffic_GBps", o.traffic / t.median / 1e9).print();
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: covenant_native_gpu_bench info\n"
               "       covenant_native_gpu_bench attention [--B 8] [--T 1024,4096] [--C 2048] [--hs 64,128] "
               "[--min-seconds S]\n"
               "       covenant_native_gpu_bench quant [--mib 256] [--block 128] [--min-seconds S]\n");
}

}  // namespace

int main(int argc, char** argv) {
  program_name() = "covenant_native_gpu_bench";
  if (argc < 2) {
    usage();
    return 2;
  }
  const std::string cmd = argv[1];
  AttentionOptions attention;
  QuantOptions quant;
  if (cmd == "info") parse_args(argc, argv, 2, {}, {});
  else if (cmd == "attention") attention = attention_options(parse_args(argc, argv, 2, {"min-seconds", "B", "T", "C", "hs"}, {}));
  else if (cmd == "quant") quant = quant_options(parse_args(argc, argv, 2, {"min-seconds", "mib", "block"}, {}));
  else {
    usage();
    return 2;
  }
  const std::string no_device = no_device_reason();
  if (!no_device.empty()) {
    print_skipped(no_device);
    return 0;
  }
  try {
    if (cmd == "info") return cmd_info();
    if (cmd == "attention") return cmd_attention(attention);
    return cmd_quant(quant);
  } catch (const std::exception& e) {
    fail(cmd + ": " + e.what());
  }
}

// The GPU suite: every CUDA kernel of include/covenant/cuda_quant.h against the CPU reference (the scalar
// *_ref functions and ErrorFeedbackCompressor) on fresh random inputs, bit for bit, with every device output
// poisoned (0xFF bytes) before each run. Exits 0 with "GPU suite skipped: no CUDA device" where there is no
// device. The seed is printed; COVENANT_GPU_TEST_SEED=N repeats a run. argv[1] filters tests by name.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../core/cuda_check.h"
#include "covenant/cuda_quant.h"
#include "covenant/quant.h"
#include "harness.h"

using namespace covenant;

namespace {

std::mt19937_64 g_rng;

// n elements of device memory, freed on scope exit.
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t n_) : n(n_) { CUDA_CHECK(cudaMalloc(&p, (n ? n : 1) * sizeof(T))); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void poison() { CUDA_CHECK(cudaMemset(p, 0xFF, (n ? n : 1) * sizeof(T))); }
  void upload(const std::vector<T>& h) {
    if (n) CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n) CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

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
  std::printf("GPU suite on %s (sm_%d%d), seed %llu (repeat with COVENANT_GPU_TEST_SEED=%llu)\n", prop.name,
              prop.major, prop.minor, seed, seed);
  const covenant_test::Test tests[] = {
      {"gpu_quantize", test_quantize},
      {"gpu_dequantize", test_dequantize},
      {"gpu_error_feedback", test_error_feedback},
      {"gpu_bad_input", test_bad_input},
  };
  return covenant_test::run_tests(tests, argc, argv);
}

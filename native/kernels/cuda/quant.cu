// int8 quantize / dequantize / dequantize-accumulate and the fused error-feedback step on a CUDA device:
// the arithmetic of include/covenant/quant.h bit for bit. The scalar CPU kernels (native/quant/
// kernels_scalar.cpp, the *_ref functions) are the oracle; native/tests/gpu_tests.cu compares against them.
//
// Exactness: every rounding step is an explicit IEEE round-to-nearest intrinsic (__fdiv_rn, __fmul_rn,
// __fadd_rn, __fsub_rn), so nothing is contracted into an FMA or turned into an approximate division, and
// the build compiles this file with -ftz=false -prec-div=true -fmad=false (never --use_fast_math); rintf
// rounds half to even like round_half_even. absmax is a max over the bit patterns of |x| (exact, order-free).
// Layout: the quantize and error-feedback-scales kernels give one thread block to each quant block
// (grid-stride over blocks) with a block-wide max reduction; the element-wise kernels are grid-stride loops.
#include <cfloat>
#include <cstdint>
#include <string>
#include <vector>

#include "../../core/cuda_check.h"
#include "../../quant/kernels.h"
#include "covenant/cuda_quant.h"
#include "covenant/quant.h"

namespace covenant {
namespace cuda {

namespace {

constexpr unsigned long long kNoBad = ~0ull;  // the flag's "no bad element" (memset 0xFF)
constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;  // |x| bits at or above this: Inf or NaN
constexpr unsigned kMaxGrid = 1u << 20;     // grid-stride beyond this many thread blocks

__device__ __forceinline__ uint32_t abs_bits(float x) { return __float_as_uint(x) & kAbsMask; }

// quant_scale() of quant.h: absmax / 127 in fp32; 0 below FLT_MIN; one ulp towards 0 if 127 * s overflows.
__device__ __forceinline__ float scale_of(uint32_t absmax_bits) {
  const float s = __fdiv_rn(__uint_as_float(absmax_bits), 127.0f);
  if (!(s >= FLT_MIN)) return 0.0f;
  if (__fmul_rn(s, 127.0f) > FLT_MAX) return __uint_as_float(__float_as_uint(s) - 1u);  // s > 0: nextafter(s, 0)
  return s;
}

// code_of() of kernels.h: clamp(round_half_even(fl(x / s)), -127, 127), s >= FLT_MIN.
__device__ __forceinline__ int8_t code_of(float x, float s) {
  float y = rintf(__fdiv_rn(x, s));
  y = y < -127.0f ? -127.0f : (y > 127.0f ? 127.0f : y);
  return static_cast<int8_t>(static_cast<int>(y));
}

// Block-wide max / min; every thread gets the result. blockDim.x is a multiple of 32, at most 1024.
__device__ uint32_t block_max(uint32_t v, uint32_t* sh) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = (threadIdx.x & 31) < (blockDim.x >> 5) ? sh[threadIdx.x & 31] : 0u;
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // sh may be reused
  return v;
}
__device__ unsigned long long block_min(unsigned long long v, unsigned long long* sh) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = (threadIdx.x & 31) < (blockDim.x >> 5) ? sh[threadIdx.x & 31] : kNoBad;
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

// q (n), scales (nb) from x (n). A block holding NaN/Inf writes nothing and lowers *bad to its first bad index.
__global__ void quantize_kernel(int8_t* q, float* scales, const float* x, size_t n, size_t block, size_t nb,
                                unsigned long long* bad) {
  __shared__ uint32_t sh_max[32];
  __shared__ unsigned long long sh_min[32];
  for (size_t b = blockIdx.x; b < nb; b += gridDim.x) {
    const size_t b0 = b * block;
    const size_t len = block < n - b0 ? block : n - b0;
    uint32_t m = 0;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) m = max(m, abs_bits(x[b0 + i]));
    m = block_max(m, sh_max);  // uniform over the block: the branches below keep __syncthreads uniform
    if (m >= kInfBits) {
      unsigned long long first = kNoBad;
      for (size_t i = threadIdx.x; i < len; i += blockDim.x)
        if (abs_bits(x[b0 + i]) >= kInfBits) { first = b0 + i; break; }
      first = block_min(first, sh_min);
      if (threadIdx.x == 0) atomicMin(bad, first);
      continue;
    }
    const float s = scale_of(m);
    if (threadIdx.x == 0) scales[b] = s;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) q[b0 + i] = s == 0.0f ? int8_t(0) : code_of(x[b0 + i], s);
  }
}

// Error feedback, pass 1: scales (nb) of v = fl(x + r); lowers *bad to the first index where v is not finite.
__global__ void ef_scales_kernel(float* scales, const float* x, const float* r, size_t n, size_t block, size_t nb,
                                 unsigned long long* bad) {
  __shared__ uint32_t sh_max[32];
  __shared__ unsigned long long sh_min[32];
  for (size_t b = blockIdx.x; b < nb; b += gridDim.x) {
    const size_t b0 = b * block;
    const size_t len = block < n - b0 ? block : n - b0;
    uint32_t m = 0;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) m = max(m, abs_bits(__fadd_rn(x[b0 + i], r[b0 + i])));
    m = block_max(m, sh_max);
    if (m >= kInfBits) {
      unsigned long long first = kNoBad;
      for (size_t i = threadIdx.x; i < len; i += blockDim.x)
        if (abs_bits(__fadd_rn(x[b0 + i], r[b0 + i])) >= kInfBits) { first = b0 + i; break; }
      first = block_min(first, sh_min);
      if (threadIdx.x == 0) atomicMin(bad, first);
      continue;
    }
    if (threadIdx.x == 0) scales[b] = scale_of(m);
  }
}

// Pass 2: q (n) = codes of v = fl(x + r) with pass 1's scales; r (n) = fl(v - fl(q * scale)) (UPDATED).
__global__ void ef_apply_kernel(int8_t* q, float* r, const float* x, const float* scales, size_t n, size_t block) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = __fadd_rn(x[i], r[i]);
    const float s = scales[i / block];
    if (s == 0.0f) {
      q[i] = 0;
      r[i] = v;
    } else {
      const int8_t c = code_of(v, s);
      q[i] = c;
      r[i] = __fsub_rn(v, __fmul_rn(static_cast<float>(c), s));
    }
  }
}

// Lowers *bad to the first b where scales[b] is negative or not finite.
__global__ void check_scales_kernel(const float* scales, size_t nb, unsigned long long* bad) {
  for (size_t b = blockIdx.x * size_t(blockDim.x) + threadIdx.x; b < nb; b += size_t(gridDim.x) * blockDim.x) {
    const float s = scales[b];
    if (!(s >= 0.0f && s <= FLT_MAX)) atomicMin(bad, static_cast<unsigned long long>(b));
  }
}

// out (n) = fl(q * scale) (OVERWRITES).
__global__ void dequantize_kernel(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __fmul_rn(static_cast<float>(q[i]), scales[i / block]);
}

// acc (n) += fl(q * scale) (ACCUMULATES; __fmul_rn is never fused into the add).
__global__ void dequantize_accumulate_kernel(float* acc, const int8_t* q, const float* scales, size_t n,
                                             size_t block) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    acc[i] = __fadd_rn(acc[i], __fmul_rn(static_cast<float>(q[i]), scales[i / block]));
}

// Threads per block for the one-block-per-quant-block kernels: a multiple of 32 that covers small blocks.
unsigned threads_for_block(size_t block) { return block <= 32 ? 32 : block <= 64 ? 64 : block <= 128 ? 128 : 256; }
constexpr unsigned kElemThreads = 256;
unsigned grid_for(size_t items, unsigned per_block) {
  const size_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(g < kMaxGrid ? g : kMaxGrid);
}

// The device word behind BadFlag: one per device and host thread, allocated on first use (plain cudaMalloc)
// and kept until the thread ends. A cudaMalloc/cudaFree pair per call would cost more than quantizing a few
// MiB, and cudaFree waits for the whole device. Calls on one thread run one after another (each reads its
// flag before returning), so they can share the word.
unsigned long long* flag_word() {
  struct Words {
    std::vector<unsigned long long*> by_device;
    ~Words() {
      for (unsigned long long* w : by_device)
        if (w) cudaFree(w);  // errors ignored: at process exit the runtime may already be gone
    }
  };
  static thread_local Words words;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (static_cast<size_t>(dev) >= words.by_device.size()) words.by_device.resize(static_cast<size_t>(dev) + 1, nullptr);
  unsigned long long*& w = words.by_device[static_cast<size_t>(dev)];
  if (!w) CUDA_CHECK(cudaMalloc(&w, sizeof *w));
  return w;
}

// One device word for "first bad index", kNoBad when none (set at construction, on the stream).
class BadFlag {
 public:
  explicit BadFlag(cudaStream_t s) : s_(s), p_(flag_word()) { CUDA_CHECK(cudaMemsetAsync(p_, 0xFF, sizeof *p_, s_)); }
  BadFlag(const BadFlag&) = delete;
  BadFlag& operator=(const BadFlag&) = delete;
  unsigned long long* get() { return p_; }
  // Waits for the stream and returns the flag.
  unsigned long long read() {
    unsigned long long h = kNoBad;
    CUDA_CHECK(cudaMemcpyAsync(&h, p_, sizeof h, cudaMemcpyDeviceToHost, s_));
    CUDA_CHECK(cudaStreamSynchronize(s_));
    return h;
  }

 private:
  cudaStream_t s_;
  unsigned long long* p_ = nullptr;
};

float read_float(const float* d, size_t i) {
  float v = 0.0f;
  CUDA_CHECK(cudaMemcpy(&v, d + i, sizeof v, cudaMemcpyDeviceToHost));
  return v;
}

// Like quant_detail::check_scales, on device: throws before anything else is launched.
void check_scales(const float* scales, size_t nb, cudaStream_t s, const char* who) {
  BadFlag bad(s);
  check_scales_kernel<<<grid_for(nb, kElemThreads), kElemThreads, 0, s>>>(scales, nb, bad.get());
  CUDA_CHECK_LAUNCH("check_scales_kernel");
  const unsigned long long b = bad.read();
  if (b != kNoBad)
    throw std::invalid_argument(std::string(who) + ": scales[" + std::to_string(b) + "] = " +
                                quant_detail::float_text(read_float(scales, b)) +
                                " is not a valid scale (expected a finite number >= 0)");
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it: "no driver" or "no device" is an answer here, not a failure
    return 0;
  }
  return n;
}

void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, int block, void* stream) {
  const size_t nb = quant_num_blocks(n, block);  // checks block
  if (nb == 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t B = static_cast<size_t>(block);
  BadFlag bad(s);
  const unsigned threads = threads_for_block(B);
  quantize_kernel<<<grid_for(nb, 1), threads, 0, s>>>(q, scales, x, n, B, nb, bad.get());
  CUDA_CHECK_LAUNCH("quantize_kernel");
  const unsigned long long first = bad.read();
  if (first != kNoBad) quant_detail::throw_nonfinite("cuda::quantize_int8", "x", first, read_float(x, first));
}

void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, int block, void* stream) {
  const size_t nb = quant_num_blocks(n, block);
  if (nb == 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  check_scales(scales, nb, s, "cuda::dequantize_int8");
  dequantize_kernel<<<grid_for(n, kElemThreads), kElemThreads, 0, s>>>(out, q, scales, n, static_cast<size_t>(block));
  CUDA_CHECK_LAUNCH("dequantize_kernel");
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void dequantize_accumulate_int8(float* acc, const int8_t* q, const float* scales, size_t n, int block,
                                void* stream) {
  const size_t nb = quant_num_blocks(n, block);
  if (nb == 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  check_scales(scales, nb, s, "cuda::dequantize_accumulate_int8");
  dequantize_accumulate_kernel<<<grid_for(n, kElemThreads), kElemThreads, 0, s>>>(acc, q, scales, n,
                                                                                   static_cast<size_t>(block));
  CUDA_CHECK_LAUNCH("dequantize_accumulate_kernel");
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void error_feedback_step(int8_t* q, float* scales, float* residual, const float* input, size_t n, int block,
                         void* stream) {
  const size_t nb = quant_num_blocks(n, block);
  if (nb == 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t B = static_cast<size_t>(block);

  // Pass 1: scales of v = input + residual; nothing else is written.
  BadFlag bad(s);
  ef_scales_kernel<<<grid_for(nb, 1), threads_for_block(B), 0, s>>>(scales, input, residual, n, B, nb, bad.get());
  CUDA_CHECK_LAUNCH("ef_scales_kernel");
  const unsigned long long first = bad.read();
  if (first != kNoBad) {
    const float x = read_float(input, first);
    if (quant_detail::abs_bits(x) >= quant_detail::kInfBits)
      quant_detail::throw_nonfinite("cuda::error_feedback_step", "input", first, x);
    const float r = read_float(residual, first);
    throw NonFiniteError("cuda::error_feedback_step: input[" + std::to_string(first) + "] + residual[" +
                             std::to_string(first) + "] = " + quant_detail::float_text(x) + " + " +
                             quant_detail::float_text(r) + " overflows fp32",
                         first, x + r, true);
  }

  // Pass 2: codes, and the new residual.
  ef_apply_kernel<<<grid_for(n, kElemThreads), kElemThreads, 0, s>>>(q, residual, input, scales, n, B);
  CUDA_CHECK_LAUNCH("ef_apply_kernel");
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace cuda
}  // namespace covenant

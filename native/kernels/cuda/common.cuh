// Helpers shared by the CUDA layer kernels (encoder, layernorm, gelu, crossentropy, adamw, attention):
// launch geometry, argument checks and warp reductions. Internal: include only from native/kernels/cuda/*.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../../core/cuda_check.h"

namespace covenant {
namespace cuda_detail {

constexpr unsigned kMaxGridBlocks = 1u << 20;  // grid-stride loops beyond this many thread blocks

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Blocks for `items` work items at `per_block` each, capped (the kernels grid-stride past the cap).
inline unsigned grid_for(size_t items, unsigned per_block) {
  const size_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(g < kMaxGridBlocks ? g : kMaxGridBlocks);
}

// Throws std::invalid_argument "who: name = value is negative" (dimensions are ints, as on the CPU).
inline void check_nonnegative(const char* who, const char* name, long long value) {
  if (value < 0)
    throw std::invalid_argument(std::string(who) + ": " + name + " = " + std::to_string(value) +
                                " is negative (expected a size >= 0)");
}

inline void check_aligned(const char* who, const char* name, const void* p, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0)
    throw std::invalid_argument(std::string(who) + ": " + name + " is not " + std::to_string(bytes) +
                                "-byte aligned (pass the start of a cudaMalloc allocation, or an offset that keeps "
                                "the alignment)");
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cuda_detail
}  // namespace covenant

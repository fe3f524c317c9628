// CUDA error checks for the native core's .cu files: every runtime call goes through CUDA_CHECK and every
// kernel launch is followed by CUDA_CHECK_LAUNCH(). A failure throws std::runtime_error naming the call (or
// the kernel), file:line and the CUDA error. Internal: include only from CUDA translation units.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace covenant {
namespace cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + what + " failed at " + file + ":" + std::to_string(line) +
                           ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace cuda_detail
}  // namespace covenant

// CUDA_CHECK(cudaMalloc(&p, bytes)); throws with the statement text, file and line.
#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t covenant_cuda_err_ = (call);                                         \
    if (covenant_cuda_err_ != cudaSuccess)                                                 \
      ::covenant::cuda_detail::throw_cuda_error(covenant_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After kernel<<<...>>>(...): reports a bad launch configuration (asynchronous faults surface at the next
// synchronizing call, which is checked too).
#define CUDA_CHECK_LAUNCH(kernel_name)                                                     \
  do {                                                                                     \
    const cudaError_t covenant_cuda_err_ = cudaGetLastError();                             \
    if (covenant_cuda_err_ != cudaSuccess)                                                 \
      ::covenant::cuda_detail::throw_cuda_error(covenant_cuda_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

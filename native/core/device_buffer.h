// n elements of device memory (cudaMalloc), freed on scope exit; for the GPU test and bench executables.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "cuda_check.h"

namespace covenant {

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t n_) : n(n_) { CUDA_CHECK(cudaMalloc(&p, (n ? n : 1) * sizeof(T))); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  // Every byte 0xFF, so an output the kernel failed to write shows.
  void poison() { CUDA_CHECK(cudaMemset(p, 0xFF, (n ? n : 1) * sizeof(T))); }
  void upload(const std::vector<T>& h) {
    if (n) CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  // The first `count` elements (all by default).
  std::vector<T> download(size_t count) const {
    std::vector<T> h(count);
    if (count) CUDA_CHECK(cudaMemcpy(h.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  std::vector<T> download() const { return download(n); }
};

}  // namespace covenant

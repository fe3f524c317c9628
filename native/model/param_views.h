// What the CPU and CUDA engines share about the flat parameter buffer: a 64-byte-aligned, zeroed host
// buffer, and named pointers to the 16 tensors at their offsets (GPT::tensors(), in layout order).
#pragma once
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "covenant/gpt.h"

namespace covenant {

inline SharedFloats alloc_floats(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return SharedFloats(p, [](float* q) { std::free(q); });
}

struct ParamViews {
  float *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb,
      *lnfw, *lnfb;
};

inline ParamViews point(float* base, const std::vector<ParamTensorInfo>& t) {
  float* p[16];
  for (int i = 0; i < 16; ++i) p[i] = base + t[i].offset;
  return {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]};
}

}  // namespace covenant

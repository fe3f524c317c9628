// Chunk and slice arithmetic of the ring (see ring_plan.h).
#include "ring_plan.h"

#include <algorithm>

namespace covenant {
namespace comm {

namespace {
int mod(int a, int N) { return ((a % N) + N) % N; }
}  // namespace

RingPlan::RingPlan(int N_, int rank_, size_t n_, size_t align_, size_t slice_elems_)
    : N(N_), rank(rank_), n(n_), align(std::max<size_t>(1, align_)) {
  slice_elems = std::max(align, slice_elems_ / align * align);
  size_t blocks = (n + align - 1) / align;
  chunk_off.resize(N);
  chunk_len.resize(N);
  size_t longest = 0;
  for (int c = 0; c < N; ++c) {
    size_t b0 = blocks * size_t(c) / size_t(N), b1 = blocks * size_t(c + 1) / size_t(N);
    chunk_off[c] = std::min(n, b0 * align);
    chunk_len[c] = std::min(n, b1 * align) - chunk_off[c];
    longest = std::max(longest, chunk_len[c]);
  }
  slices = std::max<int>(1, int((longest + slice_elems - 1) / slice_elems));
}

int RingPlan::send_chunk(int g) const { return reduce_scatter(g) ? mod(rank - g, N) : mod(rank + 1 - (g - (N - 1)), N); }
int RingPlan::recv_chunk(int g) const { return reduce_scatter(g) ? mod(rank - g - 1, N) : mod(rank - (g - (N - 1)), N); }

void RingPlan::slice_range(int c, int k, size_t* begin, size_t* end) const {
  size_t len = chunk_len[c];
  size_t b = std::min(len, size_t(k) * slice_elems), e = std::min(len, size_t(k + 1) * slice_elems);
  *begin = chunk_off[c] + b;
  *end = chunk_off[c] + e;
}

}  // namespace comm
}  // namespace covenant

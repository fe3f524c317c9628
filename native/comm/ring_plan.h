// How a tensor of n elements is cut for a ring of N ranks: N chunks on block boundaries, each sent in
// S slices per ring step; and which chunk a rank sends and receives at each of the 2(N-1) steps.
#pragma once
#include <cstddef>
#include <vector>

namespace covenant {
namespace comm {

struct RingPlan {
  int N = 1, rank = 0;
  size_t n = 0;
  size_t align = 1;        // chunk and slice boundaries are multiples of this (the int8 block size)
  size_t slice_elems = 0;  // elements per slice (a multiple of align)
  int slices = 1;          // S: slices per step (the longest chunk's count; shorter chunks send empty ones)
  std::vector<size_t> chunk_off, chunk_len;

  RingPlan(int N, int rank, size_t n, size_t align, size_t slice_elems);
  int steps() const { return 2 * (N - 1); }
  bool reduce_scatter(int g) const { return g < N - 1; }
  // Reduce-scatter step g: send chunk (r-g), receive chunk (r-g-1). All-gather step s = g-(N-1):
  // send chunk (r+1-s), receive chunk (r-s). After reduce-scatter, rank r owns chunk (r+1).
  int send_chunk(int g) const;
  int recv_chunk(int g) const;
  // Element range [begin, end) of slice k of chunk c (empty when the chunk is shorter).
  void slice_range(int c, int k, size_t* begin, size_t* end) const;
};

}  // namespace comm
}  // namespace covenant

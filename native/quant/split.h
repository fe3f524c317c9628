// Internal to native/quant: spreads a tensor of n elements over the thread pool in chunks that start on
// block boundaries, so each block is computed whole by one thread and results do not depend on the thread
// count. Chunks are at least kMinChunkElements long (smaller tensors stay on the calling thread).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "covenant/thread_pool.h"

namespace covenant {
namespace quant_detail {

// 32 Ki elements (128 KiB of fp32): a pool wake-up costs a few microseconds, about what one chunk this size
// takes to quantize.
constexpr size_t kMinChunkElements = 32768;

// fn(e0, e1, chunk) for element ranges [e0, e1) with e0 a multiple of block; chunk < pool->size() (0 without
// a pool). Blocks until every chunk is done.
template <class Fn>
void for_block_chunks(size_t n, size_t block, ThreadPool* pool, Fn&& fn) {
  if (n == 0) return;
  const size_t nb = n / block + (n % block != 0);
  if (!pool || pool->size() == 1 || n <= kMinChunkElements) {
    fn(size_t(0), n, 0);
    return;
  }
  const int64_t grain = static_cast<int64_t>(std::max<size_t>(1, kMinChunkElements / block));
  pool->parallel_for(
      static_cast<int64_t>(nb),
      [&](int64_t b0, int64_t b1, int chunk) {
        fn(static_cast<size_t>(b0) * block, std::min(n, static_cast<size_t>(b1) * block), chunk);
      },
      grain);
}

}  // namespace quant_detail
}  // namespace covenant

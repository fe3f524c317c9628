// Generation shared by the CPU and CUDA engines. sample_token: the next token from a row of logits, greedy at
// temperature <= 0, else a draw from the softmax at `temperature` over the top_k logits (all when top_k <= 0
// or > V); `order` and `probs` are scratch of V entries each. generate_tokens: the loop around it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "covenant/rng.h"

namespace covenant {

inline int32_t sample_token(const float* row, int V, float temperature, int top_k, Rng& rng, std::vector<int>& order,
                            std::vector<float>& probs) {
  if (temperature <= 0.f) return int32_t(std::max_element(row, row + V) - row);
  int k = top_k <= 0 || top_k > V ? V : top_k;
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int x, int y) { return row[x] > row[y]; });
  float maxv = row[order[0]];
  double sum = 0.0;
  for (int i = 0; i < k; ++i) {
    probs[i] = std::exp((row[order[i]] - maxv) / temperature);
    sum += probs[i];
  }
  double u = rng.uniform() * sum, acc = 0.0;
  for (int i = 0; i < k; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[k - 1];
}

// The generation loop of both engines: `next_row(last, T)` runs the model on the T tokens at `last` (the end
// of the context, at most max_seq_len of them) and returns the last position's V logits in host memory.
template <class NextRow>
std::vector<int32_t> generate_tokens(const std::vector<int32_t>& prompt, int max_new, float temperature, int top_k,
                                     uint64_t seed, int max_seq_len, int V, NextRow&& next_row) {
  if (prompt.empty()) throw std::invalid_argument("prompt must hold at least one token");
  Rng rng(seed);
  std::vector<int32_t> ctx = prompt;
  std::vector<int32_t> produced;
  std::vector<float> probs(V);
  std::vector<int> order(V);
  for (int n = 0; n < max_new; ++n) {
    const int T = std::min<int>((int)ctx.size(), max_seq_len);
    const int32_t next = sample_token(next_row(ctx.data() + ctx.size() - T, T), V, temperature, top_k, rng, order, probs);
    ctx.push_back(next);
    produced.push_back(next);
  }
  return produced;
}

}  // namespace covenant

// The next token from a row of logits, shared by the CPU and CUDA engines' generate(): greedy at temperature
// <= 0, else a draw from the softmax at `temperature` over the top_k logits (all when top_k <= 0 or > V).
// `order` and `probs` are scratch of V entries each.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
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

}  // namespace covenant

// The token batch both engines take: B rows of T (or T+1 with targets) ids, split into the model's inputs
// (B*T) and, with targets, the next-token targets (B*T); every id is checked against the vocabulary first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace covenant {

inline void split_token_rows(const int32_t* tokens, int B, int T, bool with_targets, int max_seq_len, int vocab,
                             std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  if (B <= 0 || T <= 0) throw std::invalid_argument("B and T must be positive");
  if (T > max_seq_len)
    throw std::invalid_argument("T (" + std::to_string(T) + ") exceeds model.maxSeqLen (" + std::to_string(max_seq_len) + ")");
  const int row = with_targets ? T + 1 : T;
  inputs.resize((size_t)B * T);
  targets.resize(with_targets ? (size_t)B * T : 0);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < row; ++t) {
      int32_t id = tokens[(size_t)b * row + t];
      if (id < 0 || id >= vocab)
        throw std::out_of_range("token id " + std::to_string(id) + " at [" + std::to_string(b) + "," + std::to_string(t) +
                                "] is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      if (t < T) inputs[(size_t)b * T + t] = id;
      if (with_targets && t > 0) targets[(size_t)b * T + t - 1] = id;
    }
  }
}

}  // namespace covenant

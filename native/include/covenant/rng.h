// Deterministic random numbers (splitmix64 seeding a xoshiro256**), identical on every platform.
#pragma once
#include <cstdint>

namespace covenant {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();
  float uniform();          // [0, 1)
  float normal();           // standard normal (Box-Muller, both values used)
 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  float spare_ = 0.f;
};

}  // namespace covenant

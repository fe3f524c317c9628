// xoshiro256** seeded by splitmix64; normals by Box-Muller in double precision.
#include "covenant/rng.h"

#include <cmath>

namespace covenant {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next_u64() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Rng::uniform() { return float(next_u64() >> 40) / float(1ULL << 24); }

float Rng::normal() {
  if (has_spare_) { has_spare_ = false; return spare_; }
  double u1 = (double(next_u64() >> 11) + 1.0) / 9007199254740993.0;  // (0, 1]
  double u2 = double(next_u64() >> 11) / 9007199254740992.0;
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = float(r * std::sin(2.0 * M_PI * u2));
  has_spare_ = true;
  return float(r * std::cos(2.0 * M_PI * u2));
}

}  // namespace covenant

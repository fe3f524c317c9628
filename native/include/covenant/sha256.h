// SHA-256 (FIPS 180-4), used for the parameter hash that swarm members compare.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace covenant {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t len);
  void final(uint8_t out[32]);
  static std::string hex(const void* data, size_t len);

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

}  // namespace covenant

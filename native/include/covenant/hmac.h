// HMAC-SHA-256 (RFC 2104), used by the all-reduce handshake to prove membership of a collective.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace covenant {

using Mac = std::array<uint8_t, 32>;

Mac hmac_sha256(const void* key, size_t key_len, const void* msg, size_t msg_len);
// Compares in time independent of where the first difference is.
bool mac_equal(const Mac& a, const Mac& b);

}  // namespace covenant

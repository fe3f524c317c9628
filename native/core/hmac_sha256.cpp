// HMAC-SHA-256: H((K ^ opad) || H((K ^ ipad) || m)), keys longer than a block hashed first.
#include "covenant/hmac.h"

#include <cstring>

#include "covenant/sha256.h"

namespace covenant {

Mac hmac_sha256(const void* key, size_t key_len, const void* msg, size_t msg_len) {
  uint8_t k[64] = {0};
  if (key_len > 64) {
    Sha256 h;
    h.update(key, key_len);
    h.final(k);
  } else if (key_len > 0) {
    std::memcpy(k, key, key_len);
  }
  uint8_t ipad[64], opad[64];
  for (int i = 0; i < 64; ++i) {
    ipad[i] = k[i] ^ 0x36;
    opad[i] = k[i] ^ 0x5c;
  }
  uint8_t inner[32];
  Sha256 hi;
  hi.update(ipad, 64);
  hi.update(msg, msg_len);
  hi.final(inner);
  Mac out;
  Sha256 ho;
  ho.update(opad, 64);
  ho.update(inner, 32);
  ho.final(out.data());
  return out;
}

bool mac_equal(const Mac& a, const Mac& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace covenant

// Merkle transcripts of ring traffic (see transcript.h).
#include "transcript.h"

#include <cstring>

#include "covenant/sha256.h"

namespace covenant {
namespace comm {

namespace {

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

void append_digest(std::vector<uint8_t>& out, Sha256& h) {
  size_t at = out.size();
  out.resize(at + 32);
  h.final(out.data() + at);
}

}  // namespace

void TranscriptLog::add_int8_block(uint32_t step, uint32_t block, float scale, const int8_t* codes, size_t len) {
  uint8_t head[13];
  head[0] = 0;  // leaf domain byte
  put_u32(head + 1, step);
  put_u32(head + 5, block);
  uint32_t bits;
  std::memcpy(&bits, &scale, 4);
  put_u32(head + 9, bits);
  Sha256 h;
  h.update(head, sizeof(head));
  if (len) h.update(codes, len);
  append_digest(leaves_, h);
}

void TranscriptLog::add_frame(uint32_t step, uint32_t slice, const void* payload, size_t len) {
  uint8_t head[9];
  head[0] = 0;
  put_u32(head + 1, step);
  put_u32(head + 5, slice);
  Sha256 h;
  h.update(head, sizeof(head));
  if (len) h.update(payload, len);
  append_digest(leaves_, h);
}

std::string TranscriptLog::root_hex() const {
  std::vector<uint8_t> level = leaves_;
  if (level.empty()) {
    const uint8_t zero = 0;
    return Sha256::hex(&zero, 1);
  }
  while (level.size() > 32) {
    const size_t count = level.size() / 32;
    std::vector<uint8_t> next;
    next.reserve((count + 1) / 2 * 32);
    for (size_t i = 0; i < count; i += 2) {
      if (i + 1 == count) {
        next.insert(next.end(), level.begin() + long(i * 32), level.begin() + long(i * 32 + 32));
        continue;
      }
      const uint8_t node = 1;
      Sha256 h;
      h.update(&node, 1);
      h.update(level.data() + i * 32, 64);
      append_digest(next, h);
    }
    level.swap(next);
  }
  static const char* hexd = "0123456789abcdef";
  std::string out(64, '0');
  for (int i = 0; i < 32; ++i) {
    out[2 * i] = hexd[level[i] >> 4];
    out[2 * i + 1] = hexd[level[i] & 15];
  }
  return out;
}

}  // namespace comm
}  // namespace covenant

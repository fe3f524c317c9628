// Wire frames of the all-reduce. Every frame is a 40-byte header followed by `length` payload bytes.
// All integers little-endian. Header layout (offsets in bytes):
//   0 magic u32 = 0x544E5643 ("CVNT")   4 version u16 = 1   6 kind u16
//   8 round u64   16 attempt u32   20 step u32   24 slice u32   28 length u32
//  32 crc32c u32 of the payload        36 reserved u32 = 0
// Kinds: CHALLENGE (acceptor → connector: nonce, acceptor rank), HELLO (connector → acceptor: rank,
// nonce, HMAC), WELCOME (acceptor → connector: HMAC), DATA (one slice of one ring step).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "covenant/comm.h"

namespace covenant {
namespace comm {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian; add byte swaps for this host");

constexpr uint32_t kFrameMagic = 0x544E5643u;
constexpr uint16_t kFrameVersion = 1;
constexpr uint32_t kMaxPayload = 64u << 20;  // no slice is larger; a bigger length is a protocol error

enum class FrameKind : uint16_t { Challenge = 1, Hello = 2, Welcome = 3, Data = 4 };

#pragma pack(push, 1)
struct FrameHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t kind;
  uint64_t round;
  uint32_t attempt;
  uint32_t step;
  uint32_t slice;
  uint32_t length;
  uint32_t crc32c;
  uint32_t reserved;
};
#pragma pack(pop)
static_assert(sizeof(FrameHeader) == 40, "frame header is 40 bytes on the wire");
static_assert(offsetof(FrameHeader, round) == 8 && offsetof(FrameHeader, crc32c) == 32, "frame header layout");

constexpr size_t kNonceBytes = 16;
constexpr size_t kMacBytes = 32;

#pragma pack(push, 1)
struct ChallengePayload {
  uint32_t acceptor_rank;
  uint8_t nonce[kNonceBytes];
};
struct HelloPayload {
  uint32_t connector_rank;
  uint8_t nonce[kNonceBytes];
  uint8_t mac[kMacBytes];
};
struct WelcomePayload {
  uint8_t mac[kMacBytes];
};
#pragma pack(pop)
static_assert(sizeof(ChallengePayload) == 20 && sizeof(HelloPayload) == 52 && sizeof(WelcomePayload) == 32,
              "handshake payload layout");

// A header of `kind` for collective `id`; crc32c is the caller's (it covers the payload).
inline FrameHeader make_header(FrameKind kind, const CollectiveId& id, uint32_t step, uint32_t slice, uint32_t length,
                               uint32_t crc) {
  FrameHeader h{};
  h.magic = kFrameMagic;
  h.version = kFrameVersion;
  h.kind = uint16_t(kind);
  h.round = id.round;
  h.attempt = id.attempt;
  h.step = step;
  h.slice = slice;
  h.length = length;
  h.crc32c = crc;
  return h;
}

// Why a received header is not a `kind` frame of collective `id` with `length` payload bytes, or "" if it is.
// (Step and slice are the data path's to check.)
inline std::string frame_mismatch(const FrameHeader& h, FrameKind kind, const CollectiveId& id, uint32_t length) {
  if (h.magic != kFrameMagic) return "not a covenant all-reduce frame (bad magic)";
  if (h.version != kFrameVersion) return "protocol version " + std::to_string(h.version) + ", expected " + std::to_string(kFrameVersion);
  if (h.kind != uint16_t(kind)) return "unexpected frame kind " + std::to_string(h.kind);
  if (h.round != id.round || h.attempt != id.attempt)
    return "frame for collective round " + std::to_string(h.round) + " attempt " + std::to_string(h.attempt) +
           ", expected round " + std::to_string(id.round) + " attempt " + std::to_string(id.attempt);
  if (h.length != length) return "payload length " + std::to_string(h.length) + ", expected " + std::to_string(length);
  return "";
}

}  // namespace comm
}  // namespace covenant

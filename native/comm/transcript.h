// Ring transcripts for the validator: one Merkle leaf per unit of traffic on a hop, so that a member can
// later open a single unit against the root it signed in its round report. int8 mode: a leaf per block of
// a frame (step, block index, scale, codes); fp32 mode: a leaf per frame (step, slice, payload). Leaves and
// inner nodes are hashed as src/trust/merkle.ts does: SHA-256(0x00 || data) and SHA-256(0x01 || l || r),
// a node without a sibling moving up unchanged.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace covenant {
namespace comm {

class TranscriptLog {
 public:
  // Leaf data: u32 step, u32 block (little endian), f32 scale, the block's codes.
  void add_int8_block(uint32_t step, uint32_t block, float scale, const int8_t* codes, size_t len);
  // Leaf data: u32 step, u32 slice, the frame's payload.
  void add_frame(uint32_t step, uint32_t slice, const void* payload, size_t len);
  // Hex Merkle root over the leaves so far (SHA-256(0x00) when there are none).
  std::string root_hex() const;
  // 32 bytes per leaf, in traffic order.
  std::vector<uint8_t>& leaves() { return leaves_; }

 private:
  std::vector<uint8_t> leaves_;
};

}  // namespace comm
}  // namespace covenant

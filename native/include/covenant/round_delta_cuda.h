// The outer loop's pseudo-gradient on a CUDA device: RoundDelta's contract (round_delta.h), bit for bit, with
// θ_start, the residual and Δ in device memory, so a GPU worker never downloads its parameters for a round:
// only the int8 codes and fp32 scales cross to the host, in one copy into pinned staging.
// Memory: one cudaMalloc of 4 * n floats (θ_start | residual | Δ | the residual before the last compress) at
// construction; codes | scales on the
// device and a pinned host copy of the same layout, allocated by the first compress() and grown only when a
// smaller block needs more scales. All freed in the destructor.
// `params` is DEVICE memory; q, scales, out and r are HOST memory. Calls run on the legacy default stream
// and return when their work is done; a CUDA failure throws std::runtime_error naming the call, file:line.
// Built only with COVENANT_HAVE_CUDA; no CUDA types appear here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace covenant {

class RoundDeltaCuda {
 public:
  explicit RoundDeltaCuda(size_t n);
  ~RoundDeltaCuda();
  RoundDeltaCuda(const RoundDeltaCuda&) = delete;
  RoundDeltaCuda& operator=(const RoundDeltaCuda&) = delete;

  size_t size() const { return n_; }
  bool marked() const { return marked_; }
  // θ_start = params (device to device).
  void mark(const float* params);
  // As RoundDelta::compress: Δ = fl(θ_start − params) (cuda::difference), then cuda::error_feedback_step on
  // the device residual, then one device-to-host copy of codes and scales. Same errors, same residual rule.
  void compress(int8_t* q, float* scales, const float* params, int block);
  void copy_residual(float* out);
  // Checked on the host (NonFiniteError, residual unchanged), then uploaded.
  void load_residual(const float* r);
  void reset_residual();
  // As RoundDelta::undo_compress, device to device.
  bool undo_compress();

 private:
  float* start() const { return dmem_; }
  float* residual() const { return dmem_ + n_; }
  float* delta() const { return dmem_ + 2 * n_; }
  float* before() const { return dmem_ + 3 * n_; }
  void ensure_out(size_t bytes);
  void free_out();

  size_t n_;
  bool marked_ = false;
  bool can_undo_ = false;
  float* dmem_ = nullptr;             // θ_start | residual | Δ | residual before, n floats each (device)
  unsigned char* out_ = nullptr;      // codes (n bytes) | padding | scales (device)
  unsigned char* staging_ = nullptr;  // the same bytes, pinned host memory (cudaMallocHost)
  size_t out_bytes_ = 0;              // capacity of out_ and staging_
};

}  // namespace covenant

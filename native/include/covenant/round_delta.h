// The outer loop's pseudo-gradient, kept by the engine that trains: mark() remembers the parameters at the
// start of a round (θ_start), compress() turns Δ = fl(θ_start − θ_now) into int8 codes and fp32 scales with
// error feedback on a residual of its own (zero at first). compress() gives the same bits as computing Δ
// elementwise and running ErrorFeedbackCompressor::compress on it with the same residual, so a worker that
// keeps Δ in the engine agrees with one that computes it on the host. RoundDeltaCuda (round_delta_cuda.h) is
// the device twin with the same contract.
// Memory: θ_start, the residual and a Δ scratch buffer, n floats each (θ_start and Δ allocated on first use).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace covenant {

class ThreadPool;

// What compress() without a mark() throws (std::logic_error), on either device.
inline const char* round_delta_unmarked_error() {
  return "compressDelta() needs the round's start: call markRoundStart() when the round begins (it keeps the "
         "parameters that Δ = θ_start − θ_now is measured from)";
}

class RoundDelta {
 public:
  explicit RoundDelta(size_t n) : n_(n), residual_(n, 0.0f) {}

  size_t size() const { return n_; }
  bool marked() const { return marked_; }
  // θ_start = params (n floats).
  void mark(const float* params);
  // Δ = fl(θ_start − params); q (n), scales (ceil(n / block)) and the residual as error_feedback_step (quant.h).
  // A non-finite Δ, or Δ + residual overflowing, throws NonFiniteError naming the first index ("input" is Δ)
  // and leaves the residual unchanged. Throws std::logic_error before any mark(); std::invalid_argument if
  // block < 1. pool may be null.
  void compress(int8_t* q, float* scales, const float* params, int block, ThreadPool* pool);
  // out (n) = the residual.
  void copy_residual(float* out) const;
  // residual = r (n). A non-finite element throws NonFiniteError, residual unchanged.
  void load_residual(const float* r);
  void reset_residual();
  // residual = what it was before the last compress() (a round that did not commit gives its Δ back);
  // returns false, changing nothing, when there is nothing to undo (no successful compress since the last
  // undo, load or refused compress).
  bool undo_compress();

 private:
  size_t n_;
  bool marked_ = false;
  bool can_undo_ = false;
  std::vector<float> start_, delta_, residual_, before_;
};

}  // namespace covenant

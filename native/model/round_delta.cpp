// RoundDelta (include/covenant/round_delta.h): θ_start, Δ and the error-feedback residual in host memory.
#include "covenant/round_delta.h"

#include <algorithm>
#include <stdexcept>

#include "covenant/quant.h"
#include "covenant/thread_pool.h"

namespace covenant {

void RoundDelta::mark(const float* params) {
  start_.resize(n_);
  std::copy(params, params + n_, start_.begin());
  marked_ = true;
}

void RoundDelta::compress(int8_t* q, float* scales, const float* params, int block, ThreadPool* pool) {
  if (!marked_) throw std::logic_error(round_delta_unmarked_error());
  quant_num_blocks(n_, block);  // checks block before any work
  delta_.resize(n_);
  // One rounding per element, as the host's Float32Array subtraction (no multiply, so nothing to contract).
  auto diff = [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) delta_[i] = start_[i] - params[i];
  };
  if (pool) pool->parallel_for(static_cast<int64_t>(n_), diff, 1 << 16);
  else diff(0, static_cast<int64_t>(n_), 0);
  before_.assign(residual_.begin(), residual_.end());
  can_undo_ = false;  // a refused compress leaves nothing to undo (the last one's saved residual is gone)
  error_feedback_step(q, scales, residual_.data(), delta_.data(), n_, block, pool);
  can_undo_ = true;
}

bool RoundDelta::undo_compress() {
  if (!can_undo_) return false;
  residual_.swap(before_);
  can_undo_ = false;
  return true;
}

void RoundDelta::copy_residual(float* out) const { std::copy(residual_.begin(), residual_.end(), out); }

void RoundDelta::load_residual(const float* r) {
  check_finite(r, n_, "RoundDelta::load_residual", "residual");
  std::copy(r, r + n_, residual_.begin());
  can_undo_ = false;
}

void RoundDelta::reset_residual() {
  std::fill(residual_.begin(), residual_.end(), 0.0f);
  can_undo_ = false;
}

}  // namespace covenant

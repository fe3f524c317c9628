// Learning-rate schedule: linear warm-up to the peak, then cosine decay to minLrFraction × peak.

export interface LrSchedule {
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Floor of the cosine decay, as a fraction of lr (0 decays to zero). */
  minLrFraction: number;
}

/** Learning rate for step (0-based). */
export function learningRate(step: number, s: LrSchedule): number {
  if (s.warmupSteps > 0 && step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const minLr = s.lr * s.minLrFraction;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - s.warmupSteps) / span));
  return minLr + 0.5 * (s.lr - minLr) * (1 + Math.cos(Math.PI * progress));
}

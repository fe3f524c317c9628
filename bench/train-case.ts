// A training-step bench case, and the optimizer settings the engine and the PyTorch peer both step with.
import { PresetName } from '../src/train/model-config';

export interface TrainCase {
  preset: PresetName;
  B: number;
  T: number;
  warmup: number;
  steps: number;
  torch: boolean;
}

// The optimizer settings of both sides (the torch peer's defaults: weight decay 0.1, clip 1.0).
export const STEP_OPTS = { lr: 1e-4, weightDecay: 0.1, gradClip: 1.0 };

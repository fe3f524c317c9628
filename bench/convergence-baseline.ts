// The convergence bench's reference: one process, plain AdamW at a constant lr on the same model, seed,
// B×T and total tokens as the swarm, its val loss measured on exactly the batches a worker evaluates
// (the first VAL_BATCHES eval batches of B×T of the val split, src/diloco/worker.ts #evalLoss).
import { DataLoader } from '../src/data/loader';
import { Engine, OptimizerSettings } from '../src/native';
import { ModelConfig } from '../src/train/model-config';

/** Val batches per evaluation: the worker's default (`evalBatches` in src/diloco/worker.ts). */
export const VAL_BATCHES = 8;

export interface BaselineSettings {
  model: ModelConfig;
  dataDir: string;
  seed: number;
  B: number;
  T: number;
  steps: number;
  opt: OptimizerSettings;
  /** Val loss after every `evalEvery` steps (and at the end). */
  evalEvery: number;
  threads: number;
}

export interface BaselineResult {
  params: number;
  valLoss: number;
  /** [step, val loss] after every evalEvery steps; the last is the final one. */
  valCurve: Array<[number, number]>;
  finalTrainLoss: number;
  seconds: number;
}

/** Mean of Engine.evalLoss over the first VAL_BATCHES eval batches of B×T: the worker's measurement. */
export async function valLoss(engine: Engine, val: DataLoader, B: number, T: number): Promise<number> {
  let sum = 0;
  let k = 0;
  for (const batch of val.evalBatches(B, T, VAL_BATCHES)) {
    sum += await engine.evalLoss(batch, B, T);
    k++;
  }
  return sum / k;
}

/** Trains `steps` AdamW steps on random windows of the train split (DataLoader.batch with the run seed). */
export async function runBaseline(s: BaselineSettings, onProgress?: (step: number, loss: number) => void): Promise<BaselineResult> {
  const train = DataLoader.open(s.dataDir, { split: 'train' });
  const val = DataLoader.open(s.dataDir, { split: 'val' });
  const engine = Engine.create({ model: s.model, seed: s.seed, threads: s.threads });
  try {
    const t0 = process.hrtime.bigint();
    const valCurve: Array<[number, number]> = [];
    let loss = NaN;
    for (let step = 0; step < s.steps; step++) {
      loss = (await engine.step(train.batch(step, s.B, s.T, s.seed), s.B, s.T, s.opt)).loss;
      if (!Number.isFinite(loss)) throw new Error(`single-worker baseline: loss ${loss} at step ${step}; lower the inner lr`);
      if ((step + 1) % s.evalEvery === 0 || step + 1 === s.steps) {
        valCurve.push([step + 1, await valLoss(engine, val, s.B, s.T)]);
        onProgress?.(step + 1, loss);
      }
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return { params: engine.params().length, valLoss: valCurve[valCurve.length - 1][1], valCurve, finalTrainLoss: loss, seconds };
  } finally {
    engine.dispose();
  }
}

// Timing the Node engine's training step (forward, backward, clip, AdamW) on random tokens.
import { performance } from 'node:perf_hooks';

import { Engine } from '../src/native';
import { presetConfig } from '../src/train/model-config';
import { STEP_OPTS, TrainCase } from './train-case';

/** xorshift32 tokens in [0, V): the bench needs no particular text, only valid ids. */
function randomTokens(n: number, V: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s % V;
  }
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** `c.warmup` untimed steps, then `c.steps` timed ones: median and fastest step, and the last loss. */
export async function timeCovenant(c: TrainCase, threads: number, device: 'cpu' | 'cuda' = 'cpu'): Promise<{ params: number; seconds: number; seconds_min: number; loss: number }> {
  const model = presetConfig(c.preset);
  const engine = device === 'cuda' ? Engine.create({ model, device, seed: 1 }) : Engine.create({ model, threads, seed: 1 });
  try {
    const batches = [0, 1, 2, 3].map((i) => randomTokens(c.B * (c.T + 1), model.vocabSize, 1234 + i));
    const times: number[] = [];
    let loss = NaN;
    for (let i = 0; i < c.warmup + c.steps; i++) {
      const t0 = performance.now();
      loss = (await engine.step(batches[i % batches.length], c.B, c.T, STEP_OPTS)).loss;
      const dt = (performance.now() - t0) / 1e3;
      if (i >= c.warmup) times.push(dt);
    }
    return { params: engine.numParams, seconds: median(times), seconds_min: Math.min(...times), loss };
  } finally {
    engine.dispose();
  }
}

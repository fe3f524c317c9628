// `covenant train` settings: one schema, parsed from a config file and then overridden by flags, with
// messages that name the bad field.
import { checkNumberFields, NumberLimit } from '../number-limits';
import fs from 'node:fs';
import { errorMessage } from '../errors';
import { invalidParameter, ModelConfig, parseModelConfig, PRESETS } from './model-config';

export interface TrainConfig {
  /** A preset name, or an explicit shape (vocabSize may be omitted: the data's tokenizer decides). */
  model: string | (Omit<ModelConfig, 'vocabSize'> & { vocabSize?: number });
  data: string;
  outDir: string;
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  warmupSteps: number;
  minLrFraction: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradClip: number;
  /** Evaluate val loss every N steps (0: only at the end). */
  evalInterval: number;
  /** At most this many val batches per evaluation. */
  evalBatches: number;
  /** Write a checkpoint every N steps (0: only at the end). */
  checkpointInterval: number;
  seed: number;
  /** Compute threads; 0 = all hardware threads. */
  threads: number;
  /** Stop after this many seconds (0: no limit); the schedule is re-planned after the first steps to fit. */
  maxSeconds: number;
}

export const TRAIN_DEFAULTS: Omit<TrainConfig, 'data' | 'outDir'> = {
  model: 'tiny',
  steps: 1000,
  batchSize: 4,
  seqLen: 64,
  lr: 6e-4,
  warmupSteps: 20,
  minLrFraction: 0.1,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  gradClip: 1.0,
  evalInterval: 100,
  evalBatches: 20,
  checkpointInterval: 0,
  seed: 1337,
  threads: 0,
  maxSeconds: 0,
};

type NumericKey = { [K in keyof TrainConfig]: TrainConfig[K] extends number ? K : never }[keyof TrainConfig];

const LIMITS: Record<NumericKey, NumberLimit> = {
  steps: { int: true, min: 1 },
  batchSize: { int: true, min: 1, max: 1 << 16 },
  seqLen: { int: true, min: 1, max: 1 << 16 },
  lr: { int: false, min: 0, max: 10 },
  warmupSteps: { int: true, min: 0 },
  minLrFraction: { int: false, min: 0, max: 1 },
  weightDecay: { int: false, min: 0, max: 10 },
  beta1: { int: false, min: 0, below: 1 },
  beta2: { int: false, min: 0, below: 1 },
  eps: { int: false, min: 0, max: 1 },
  gradClip: { int: false, min: 0 },
  evalInterval: { int: true, min: 0 },
  evalBatches: { int: true, min: 1 },
  checkpointInterval: { int: true, min: 0 },
  seed: { int: true, min: 0, max: 2147483647 },
  threads: { int: true, min: 0, max: 1024 },
  maxSeconds: { int: false, min: 0 },
};

/** Validates a merged config (file values overridden by flags). `where` prefixes field names in messages. */
export function parseTrainConfig(raw: Record<string, unknown>, where = 'config'): TrainConfig {
  const known = new Set([...Object.keys(TRAIN_DEFAULTS), 'data', 'outDir']);
  for (const k of Object.keys(raw)) {
    if (!known.has(k)) throw new TypeError(`Unknown field ${where}.${k} (known: ${[...known].join(', ')})`);
  }
  const merged: Record<string, unknown> = { ...TRAIN_DEFAULTS, ...Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined)) };
  checkNumberFields(merged, LIMITS, where);
  for (const key of ['data', 'outDir'] as const) {
    const v = merged[key];
    if (typeof v !== 'string' || v === '') throw new TypeError(invalidParameter(`${where}.${key}`, 'a path', v));
  }
  const model = merged.model;
  if (typeof model === 'string') {
    if (!(model in PRESETS)) throw new RangeError(invalidParameter(`${where}.model`, `a preset (${Object.keys(PRESETS).join(', ')}) or a shape object`, model));
  } else {
    // vocabSize comes from the data unless given; check the rest of the shape now.
    parseModelConfig({ vocabSize: 1, ...(model as object) }, `${where}.model`);
  }
  const cfg = merged as unknown as TrainConfig;
  return cfg;
}

/** Reads a JSON config file; errors name the file. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read config file ${file}: ${errorMessage(e)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`config file ${file} is not valid JSON: ${errorMessage(e)}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TypeError(`config file ${file} must hold a JSON object`);
  return raw as Record<string, unknown>;
}

/** The concrete model shape for a config and the data's vocabulary size. */
export function resolveModel(cfg: TrainConfig, dataVocab: number): ModelConfig {
  if (typeof cfg.model === 'string') return { vocabSize: dataVocab, ...PRESETS[cfg.model as keyof typeof PRESETS] };
  const m = parseModelConfig({ vocabSize: dataVocab, ...cfg.model }, 'config.model');
  if (m.vocabSize < dataVocab) throw new RangeError(`config.model.vocabSize (${m.vocabSize}) is smaller than the data's vocabulary (${dataVocab})`);
  return m;
}

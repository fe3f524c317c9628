// GPT model shapes: the presets, and parsing of an explicit shape from a config file or flags.

/** A GPT-2 style model shape. V = vocabSize, maxT = maxSeqLen, L = numLayers, NH = numHeads, C = channels. */
export interface ModelConfig {
  vocabSize: number;
  maxSeqLen: number;
  numLayers: number;
  numHeads: number;
  channels: number;
}

export type PresetName = 'tiny' | 'small' | 'gpt2';

/** Presets fix the shape; the vocabulary comes from the tokenizer unless given (GPT-2 BPE: 50257). */
export const PRESETS: Record<PresetName, Omit<ModelConfig, 'vocabSize'>> = {
  tiny: { maxSeqLen: 64, numLayers: 2, numHeads: 4, channels: 64 },
  small: { maxSeqLen: 256, numLayers: 6, numHeads: 6, channels: 384 },
  gpt2: { maxSeqLen: 1024, numLayers: 12, numHeads: 12, channels: 768 },
};

export const GPT2_VOCAB_SIZE = 50257;

export function invalidParameter(name: string, expected: string, actual: unknown): string {
  return `Expected ${expected} for ${name} but received ${describeValue(actual)}`;
}

/** A short description of any value for an error message (never a dump of a large array). */
export function describeValue(actual: unknown): string {
  if (actual === null || actual === undefined) return String(actual);
  if (typeof actual === 'string') return JSON.stringify(actual.length > 80 ? `${actual.slice(0, 80)}…` : actual);
  if (ArrayBuffer.isView(actual)) return `${actual.constructor.name}(${(actual as unknown as ArrayLike<unknown>).length ?? actual.byteLength})`;
  if (Array.isArray(actual)) return `an array of length ${actual.length}`;
  if (typeof actual === 'object') return `an object (${(actual as object).constructor?.name ?? 'Object'})`;
  const s = String(actual);
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

function positiveInt(raw: Record<string, unknown>, key: keyof ModelConfig, where: string): number {
  const v = raw[key];
  if (typeof v !== 'number') throw new TypeError(invalidParameter(`${where}.${key}`, 'a positive integer', v));
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(invalidParameter(`${where}.${key}`, 'a positive integer', v));
  return v;
}

/** Validates a model shape; messages name the bad field. */
export function parseModelConfig(raw: unknown, where = 'model'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new TypeError(invalidParameter(where, 'an object', raw));
  }
  const obj = raw as Record<string, unknown>;
  const known = ['vocabSize', 'maxSeqLen', 'numLayers', 'numHeads', 'channels'];
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw new TypeError(`Unknown field ${where}.${k} (known: ${known.join(', ')})`);
  }
  const cfg: ModelConfig = {
    vocabSize: positiveInt(obj, 'vocabSize', where),
    maxSeqLen: positiveInt(obj, 'maxSeqLen', where),
    numLayers: positiveInt(obj, 'numLayers', where),
    numHeads: positiveInt(obj, 'numHeads', where),
    channels: positiveInt(obj, 'channels', where),
  };
  if (cfg.channels % cfg.numHeads !== 0) {
    throw new RangeError(`${where}.channels (${cfg.channels}) must be divisible by ${where}.numHeads (${cfg.numHeads})`);
  }
  if (cfg.vocabSize > 65536) {
    throw new RangeError(invalidParameter(`${where}.vocabSize`, 'at most 65536 (tokens are stored as uint16)', cfg.vocabSize));
  }
  return cfg;
}

export function presetConfig(name: string, vocabSize = GPT2_VOCAB_SIZE): ModelConfig {
  if (!(name in PRESETS)) {
    throw new RangeError(invalidParameter('preset', `one of ${Object.keys(PRESETS).join(', ')}`, name));
  }
  return { vocabSize, ...PRESETS[name as PresetName] };
}

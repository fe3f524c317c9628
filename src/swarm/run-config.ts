// The coordinator's run config (`covenant coordinator --config run.json`): one validated object holding the
// run id, the model, the data manifest hash, the seed and every hyper-parameter of the rounds. Unknown keys
// and bad values are refused with a message naming the field; defaults fill what is left out.
import { checkNumberFields, NumberLimit } from '../number-limits';
import { invalidParameter, ModelConfig, parseModelConfig, PRESETS, PresetName } from '../train/model-config';

export type CompressionMode = 'fp32' | 'int8';

export interface RunConfig {
  /** Names the run; every signed request carries it. */
  runId: string;
  /** The resolved model shape. */
  model: ModelConfig;
  /** SHA-256 hex of the data manifest every worker must hold. */
  manifestSha256: string;
  /** Seed of θ's initialization and the ring order. */
  seed: number;
  /** Inner steps per round (H). */
  innerSteps: number;
  /** Rows per inner step. */
  batchSize: number;
  /** Tokens per row (≤ the model's maxSeqLen). */
  seqLen: number;
  innerLr: number;
  innerWeightDecay: number;
  /** Global gradient-norm clip of the inner AdamW steps (0: off). */
  innerGradClip: number;
  outerLr: number;
  outerMomentum: number;
  compression: CompressionMode;
  /** int8 quantization block (elements). */
  blockSize: number;
  /** From a plan's fixing to the time its members must have reported, ms. */
  roundDeadlineMs: number;
  /** From a round's opening to its planning deadline, ms. */
  planDelayMs: number;
  minMembers: number;
  heartbeatTimeoutMs: number;
  /** Interval the workers are told to heartbeat at (below heartbeatTimeoutMs). */
  heartbeatIntervalMs: number;
  allreduceTimeoutMs: number;
  /** Plan attempts per round, the first included. */
  maxAttempts: number;
  /** Members the validator checks for useful work per checked round (0: all). */
  verifyMembers: number;
  /** Check useful work in about one round of every verifyEvery (which ones: drawn from the committed hash). */
  verifyEvery: number;
  /** Eval batches per side of the useful-work check. */
  verifyBatches: number;
  /** How long the validator waits for a sampled member's Δ, ms. */
  verifyTimeoutMs: number;
  /** A committed Δ norm above normFactor × the attempt's median, or below median / normFactor, fails. */
  normFactor: number;
  /** Contributions are clipped to clipFactor × the attempt's median scale bound (0: no clipping). */
  clipFactor: number;
  /** Rounds a member that failed a check sits out. */
  penaltyRounds: number;
  /** Train shards a member's windows come from in a round (0: the whole split); it fetches only those. */
  shardsPerRound: number;
  /** Δ blocks every member opens after a commit for the validator's recomputation of the ring (0: off). */
  openBlocks: number;
  /**
   * Peer ids of members given the validator role: they run the useful-work checks of other members (absent:
   * the coordinator runs them itself, with --data). Left out of the config when empty, so configs written
   * before the field existed keep their hash.
   */
  validators?: string[];
  /**
   * Delegated checks per checked round the coordinator (with --data) measures again itself, to catch a
   * validator member that lies (absent: 1; 0: no audits). Left out of the config when not given.
   */
  validatorAudits?: number;
}

type NumericKey = { [K in keyof RunConfig]-?: RunConfig[K] extends number ? K : never }[keyof RunConfig];

export const RUN_DEFAULTS = {
  seed: 1337,
  innerSteps: 100,
  batchSize: 8,
  seqLen: 64,
  innerLr: 6e-4,
  innerGradClip: 1,
  innerWeightDecay: 0.1,
  outerLr: 0.7,
  outerMomentum: 0.9,
  compression: 'int8' as CompressionMode,
  blockSize: 256,
  roundDeadlineMs: 600_000,
  planDelayMs: 5_000,
  minMembers: 1,
  heartbeatTimeoutMs: 30_000,
  allreduceTimeoutMs: 60_000,
  maxAttempts: 3,
  verifyMembers: 0,
  verifyEvery: 1,
  verifyBatches: 16,
  verifyTimeoutMs: 60_000,
  normFactor: 6,
  clipFactor: 1.5,
  penaltyRounds: 5,
  shardsPerRound: 0,
  openBlocks: 8,
};

const MAX_MS = 2147483647;

const LIMITS: Record<NumericKey, NumberLimit> = {
  seed: { int: true, min: 0, max: 2147483647 },
  innerSteps: { int: true, min: 1, max: 1_000_000 },
  batchSize: { int: true, min: 1, max: 65_536 },
  seqLen: { int: true, min: 1, max: 1 << 20 },
  innerLr: { int: false, min: 0, max: 10 },
  innerGradClip: { int: false, min: 0, max: 1e6 },
  innerWeightDecay: { int: false, min: 0, max: 10 },
  outerLr: { int: false, min: 0, max: 10 },
  outerMomentum: { int: false, min: 0, below: 1 },
  blockSize: { int: true, min: 1, max: 1 << 20 },
  roundDeadlineMs: { int: true, min: 1, max: MAX_MS },
  planDelayMs: { int: true, min: 0, max: MAX_MS },
  minMembers: { int: true, min: 1, max: 10_000 },
  heartbeatTimeoutMs: { int: true, min: 2, max: MAX_MS },
  heartbeatIntervalMs: { int: true, min: 1, max: MAX_MS },
  allreduceTimeoutMs: { int: true, min: 1, max: MAX_MS },
  maxAttempts: { int: true, min: 1, max: 1000 },
  verifyMembers: { int: true, min: 0, max: 10_000 },
  verifyEvery: { int: true, min: 1, max: 1_000_000 },
  verifyBatches: { int: true, min: 1, max: 1000 },
  verifyTimeoutMs: { int: true, min: 1, max: MAX_MS },
  normFactor: { int: false, min: 1, max: 1e6 },
  clipFactor: { int: false, min: 0, max: 1e6 },
  penaltyRounds: { int: true, min: 0, max: 1_000_000 },
  shardsPerRound: { int: true, min: 0, max: 1_000_000 },
  openBlocks: { int: true, min: 0, max: 4096 },
};

const KNOWN = ['runId', 'model', 'vocabSize', 'manifestSha256', 'compression', 'validators', 'validatorAudits', ...Object.keys(LIMITS)];
const RUN_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const PEER_ID_RE = /^[0-9a-f]{40}$/;

function parseValidators(v: unknown, where: string): string[] {
  if (!Array.isArray(v)) throw new TypeError(invalidParameter(`${where}.validators`, 'an array of peer ids', v));
  v.forEach((p, i) => {
    if (typeof p !== 'string' || !PEER_ID_RE.test(p)) throw new TypeError(invalidParameter(`${where}.validators[${i}]`, 'a peer id (40 lowercase hex digits, as `covenant worker` logs it)', p));
    if (v.indexOf(p) !== i) throw new RangeError(`${where}.validators[${i}] repeats ${p}`);
  });
  return [...(v as string[])];
}

/**
 * Validates a run config object. `model` is a preset name (with `vocabSize`, default 50257) or a full shape;
 * `where` prefixes field names in messages (e.g. the file's name).
 */
export function parseRunConfig(raw: unknown, where = 'config'): RunConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TypeError(invalidParameter(where, 'a JSON object', raw));
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (!KNOWN.includes(k)) throw new TypeError(`Unknown field ${where}.${k} (known: ${KNOWN.join(', ')})`);
  }
  const runId = obj.runId;
  if (typeof runId !== 'string' || !RUN_ID_RE.test(runId)) {
    throw new TypeError(invalidParameter(`${where}.runId`, 'a run id (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)', runId));
  }
  const manifest = obj.manifestSha256;
  if (typeof manifest !== 'string' || !SHA256_RE.test(manifest)) {
    throw new TypeError(invalidParameter(`${where}.manifestSha256`, 'a SHA-256 as 64 lowercase hex digits', manifest));
  }
  let model: ModelConfig;
  if (typeof obj.model === 'string') {
    if (!(obj.model in PRESETS)) throw new RangeError(invalidParameter(`${where}.model`, `a preset (${Object.keys(PRESETS).join(', ')}) or a shape object`, obj.model));
    const vocab = obj.vocabSize ?? 50257;
    model = parseModelConfig({ vocabSize: vocab, ...PRESETS[obj.model as PresetName] }, where);
  } else if (typeof obj.model === 'object' && obj.model !== null && !Array.isArray(obj.model)) {
    if (obj.vocabSize !== undefined) throw new TypeError(`${where}.vocabSize goes inside ${where}.model when the model is a shape object`);
    model = parseModelConfig(obj.model, `${where}.model`);
  } else {
    throw new TypeError(invalidParameter(`${where}.model`, `a preset (${Object.keys(PRESETS).join(', ')}) or a shape object`, obj.model));
  }
  const merged: Record<string, unknown> = { ...RUN_DEFAULTS, ...Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) };
  if (obj.seqLen === undefined) merged.seqLen = Math.min(RUN_DEFAULTS.seqLen, model.maxSeqLen);
  if (merged.heartbeatIntervalMs === undefined && typeof merged.heartbeatTimeoutMs === 'number') {
    merged.heartbeatIntervalMs = Math.max(1, Math.floor(merged.heartbeatTimeoutMs / 3));
  }
  checkNumberFields(merged, LIMITS, where);
  if (merged.compression !== 'fp32' && merged.compression !== 'int8') {
    throw new RangeError(invalidParameter(`${where}.compression`, "'fp32' or 'int8'", merged.compression));
  }
  if ((merged.heartbeatIntervalMs as number) >= (merged.heartbeatTimeoutMs as number)) {
    throw new RangeError(`${where}.heartbeatIntervalMs (${String(merged.heartbeatIntervalMs)}) must be below ${where}.heartbeatTimeoutMs (${String(merged.heartbeatTimeoutMs)})`);
  }
  if ((merged.seqLen as number) > model.maxSeqLen) {
    throw new RangeError(`${where}.seqLen (${String(merged.seqLen)}) exceeds the model's maxSeqLen (${model.maxSeqLen})`);
  }
  const cfg: RunConfig = {
    runId,
    model,
    manifestSha256: manifest,
    seed: merged.seed as number,
    innerSteps: merged.innerSteps as number,
    batchSize: merged.batchSize as number,
    seqLen: merged.seqLen as number,
    innerLr: merged.innerLr as number,
    innerGradClip: merged.innerGradClip as number,
    innerWeightDecay: merged.innerWeightDecay as number,
    outerLr: merged.outerLr as number,
    outerMomentum: merged.outerMomentum as number,
    compression: merged.compression,
    blockSize: merged.blockSize as number,
    roundDeadlineMs: merged.roundDeadlineMs as number,
    planDelayMs: merged.planDelayMs as number,
    minMembers: merged.minMembers as number,
    heartbeatTimeoutMs: merged.heartbeatTimeoutMs as number,
    heartbeatIntervalMs: merged.heartbeatIntervalMs as number,
    allreduceTimeoutMs: merged.allreduceTimeoutMs as number,
    maxAttempts: merged.maxAttempts as number,
    verifyMembers: merged.verifyMembers as number,
    verifyEvery: merged.verifyEvery as number,
    verifyBatches: merged.verifyBatches as number,
    verifyTimeoutMs: merged.verifyTimeoutMs as number,
    normFactor: merged.normFactor as number,
    clipFactor: merged.clipFactor as number,
    penaltyRounds: merged.penaltyRounds as number,
    shardsPerRound: merged.shardsPerRound as number,
    openBlocks: merged.openBlocks as number,
  };
  if (obj.validatorAudits !== undefined) {
    checkNumberFields({ validatorAudits: obj.validatorAudits }, { validatorAudits: { int: true, min: 0, max: 10_000 } }, where);
    cfg.validatorAudits = obj.validatorAudits as number;
  }
  if (obj.validators !== undefined) {
    const validators = parseValidators(obj.validators, where);
    if (validators.length) cfg.validators = validators;
  }
  return cfg;
}

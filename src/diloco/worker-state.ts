// A worker's persisted state: θ after its last committed round, the outer momentum, the inner AdamW moments
// and step, and the int8 error-feedback residual. One safetensors file in the --state directory, written
// atomically (tensors theta, momentum, adam_m, adam_v, residual; metadata format/run_id/round/adam_step/
// theta_sha256). A file that fails any check is refused with CHECKPOINT_CORRUPT naming it, never replaced.
import * as fs from 'fs';
import * as path from 'path';
import { types } from 'node:util';
import { CheckpointCorruptError } from '../errors';
import { paramsSha256 } from '../train/checkpoint';
import { invalidParameter } from '../train/model-config';
import { SafetensorsContents, decodeSafetensors, encodeSafetensors, readStateFile, writeSafetensors } from '../train/safetensors';

/** File name of the worker state inside the worker's state directory. */
export const WORKER_STATE_FILE = 'worker-state.safetensors';
/** Value of the `format` metadata key; a file with another is refused. */
export const WORKER_STATE_FORMAT = 'covenant-worker-state/v1';

export interface WorkerState {
  readonly runId: string;
  /** The last committed round θ belongs to: θ is the state after it (0 = the initial θ). */
  readonly round: number;
  readonly theta: Float32Array;
  /** Outer Nesterov momentum. */
  readonly momentum: Float32Array;
  /** Inner AdamW moments and step count. */
  readonly adamM: Float32Array;
  readonly adamV: Float32Array;
  readonly adamStep: number;
  /** What int8 quantization of the pseudo-gradient lost, added back next round. */
  readonly residual: Float32Array;
  /** SHA-256 hex of θ's fp32 little-endian bytes. */
  readonly thetaSha256: string;
}

/** Tensor names in file order, and the field each holds. */
const TENSORS = [
  ['theta', 'theta'],
  ['momentum', 'momentum'],
  ['adam_m', 'adamM'],
  ['adam_v', 'adamV'],
  ['residual', 'residual'],
] as const;

/** A validated, frozen WorkerState with θ's hash computed. The arrays are held, not copied. */
export function makeWorkerState(fields: Omit<WorkerState, 'thetaSha256'>): WorkerState {
  if (typeof fields !== 'object' || fields === null) throw new TypeError(invalidParameter('fields', 'an object', fields));
  const { runId, round, adamStep } = fields;
  if (typeof runId !== 'string') throw new TypeError(invalidParameter('runId', 'a non-empty string', runId));
  if (runId === '') throw new RangeError(invalidParameter('runId', 'a non-empty string', runId));
  if (!Number.isSafeInteger(round) || round < 0) throw new RangeError(invalidParameter('round', 'a non-negative safe integer', round));
  if (!Number.isSafeInteger(adamStep) || adamStep < 0) throw new RangeError(invalidParameter('adamStep', 'a non-negative safe integer', adamStep));
  for (const [, key] of TENSORS) {
    if (!types.isFloat32Array(fields[key])) throw new TypeError(invalidParameter(key, 'a Float32Array', fields[key]));
  }
  const n = fields.theta.length;
  if (n === 0) throw new RangeError('theta is empty; the worker state needs the parameters');
  for (const [, key] of TENSORS) {
    if (fields[key].length !== n) throw new RangeError(`${key} has ${fields[key].length} elements but theta has ${n}; they must match`);
  }
  const { theta, momentum, adamM, adamV, residual } = fields;
  return Object.freeze({ runId, round, theta, momentum, adamM, adamV, adamStep, residual, thetaSha256: paramsSha256(theta) });
}

function metadataOf(s: WorkerState): Record<string, string> {
  return { format: WORKER_STATE_FORMAT, run_id: s.runId, round: String(s.round), adam_step: String(s.adamStep), theta_sha256: s.thetaSha256 };
}

function tensorsOf(s: WorkerState) {
  return TENSORS.map(([name, key]) => ({ name, dtype: 'F32' as const, shape: [s[key].length], data: s[key] }));
}

/** The state's bytes (a safetensors file) as pieces, without copying the arrays. */
export function encodeWorkerState(s: WorkerState): Buffer[] {
  return encodeSafetensors(tensorsOf(s), metadataOf(s));
}

function parseCount(text: string | undefined): number {
  return /^(0|[1-9][0-9]*)$/.test(text ?? '') ? Number(text) : NaN;
}

/** Checks parsed contents and builds the state; every problem is a CheckpointCorruptError naming `source`. */
function fromContents(contents: SafetensorsContents, source: string): WorkerState {
  const fail = (what: string) => new CheckpointCorruptError(`Worker state ${source} is invalid: ${what}`);
  const { metadata, tensors } = contents;
  if (metadata.format !== WORKER_STATE_FORMAT) {
    throw fail(`metadata format is ${JSON.stringify(metadata.format)}, expected ${JSON.stringify(WORKER_STATE_FORMAT)}`);
  }
  const runId = metadata.run_id;
  if (typeof runId !== 'string' || runId === '') throw fail('metadata run_id is missing or empty');
  const round = parseCount(metadata.round);
  if (!Number.isSafeInteger(round)) throw fail(`metadata round ${JSON.stringify(metadata.round)} is not a non-negative integer`);
  const adamStep = parseCount(metadata.adam_step);
  if (!Number.isSafeInteger(adamStep)) throw fail(`metadata adam_step ${JSON.stringify(metadata.adam_step)} is not a non-negative integer`);
  const names = [...tensors.keys()].sort().join(', ');
  const expected = TENSORS.map(([name]) => name).sort().join(', ');
  if (names !== expected) throw fail(`it holds tensors [${names}], expected exactly [${expected}]`);
  const arrays = {} as Record<(typeof TENSORS)[number][1], Float32Array>;
  const n = tensors.get('theta')?.data.length ?? 0;
  if (n === 0) throw fail('theta is empty');
  for (const [name, key] of TENSORS) {
    const t = tensors.get(name);
    if (!t) throw fail(`tensor ${name} is missing`);
    if (t.dtype !== 'F32' || t.shape.length !== 1) throw fail(`${name} is ${t.dtype} [${t.shape.join(', ')}], expected a 1-D F32 tensor`);
    if (t.data.length !== n) throw fail(`${name} has ${t.data.length} elements but theta has ${n}`);
    arrays[key] = t.data as Float32Array;
  }
  const state = makeWorkerState({ runId, round, adamStep, ...arrays });
  if (state.thetaSha256 !== metadata.theta_sha256) {
    throw fail(`theta's SHA-256 is ${state.thetaSha256} but the file records ${JSON.stringify(metadata.theta_sha256)} (checksum mismatch)`);
  }
  return state;
}

/** Parses a state held in memory (e.g. pulled from a peer); `source` names it in errors. */
export function decodeWorkerState(payload: Uint8Array, source = 'payload'): WorkerState {
  return fromContents(decodeSafetensors(payload, source), source);
}

/** Path of the worker state file in `stateDir`. */
export function workerStatePath(stateDir: string): string {
  return path.join(stateDir, WORKER_STATE_FILE);
}

/** Writes the state atomically (temp file, fsync, rename, directory fsync) into `stateDir`, creating it. */
export async function saveWorkerState(stateDir: string, s: WorkerState): Promise<void> {
  await fs.promises.mkdir(stateDir, { recursive: true });
  await writeSafetensors(workerStatePath(stateDir), tensorsOf(s), metadataOf(s));
}

/**
 * The worker's state in `stateDir`, or undefined when there is none (a fresh worker). A damaged file is
 * refused with CHECKPOINT_CORRUPT; one of another run or model size with a plain Error. Never replaced.
 */
export async function loadWorkerState(stateDir: string, expect: { runId?: string; numParams?: number } = {}): Promise<WorkerState | undefined> {
  const file = workerStatePath(stateDir);
  const contents = await readStateFile(file, `the worker state ${file} is unusable (restore it or use another --state directory)`);
  if (!contents) return undefined;
  const state = fromContents(contents, file);
  if (expect.runId !== undefined && state.runId !== expect.runId) {
    throw new Error(`Worker state ${file} belongs to run ${JSON.stringify(state.runId)}, not ${JSON.stringify(expect.runId)}; use another --state directory for this run`);
  }
  if (expect.numParams !== undefined && state.theta.length !== expect.numParams) {
    throw new Error(
      `Worker state ${file} holds ${state.theta.length} parameters but the model has ${expect.numParams}; use another --state directory for this model`,
    );
  }
  return state;
}

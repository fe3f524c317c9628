// The coordinator's committed global state: the round, θ (flat fp32 parameters), the outer momentum and θ's
// sync hash. Persisted atomically in the state directory as a safetensors file (tensors `theta` and
// `momentum`, metadata format/round/theta_sha256), loaded on restart; the same bytes are the FetchState
// payload (state-stream.ts). A file that fails any check is refused with CHECKPOINT_CORRUPT naming it.
import * as fs from 'fs';
import * as path from 'path';
import { types } from 'node:util';
import { CheckpointCorruptError } from '../errors';
import { paramsSha256 } from '../train/checkpoint';
import { invalidParameter } from '../train/model-config';
import { SafetensorsContents, decodeSafetensors, encodeSafetensors, readStateFile, writeSafetensors } from '../train/safetensors';

/** File name of the committed global state inside the coordinator's state directory. */
export const GLOBAL_STATE_FILE = 'global-state.safetensors';
/** Value of the `format` metadata key; a file with another is refused. */
export const GLOBAL_STATE_FORMAT = 'covenant-global-state/v1';
/** StateHeader.format of the FetchState payload: the bytes of the file above. */
export const STATE_PAYLOAD_FORMAT = 'safetensors';

export interface GlobalState {
  /** θ is θ(round); the momentum is the one after round − 1. */
  readonly round: number;
  readonly theta: Float32Array;
  readonly momentum: Float32Array;
  /** SHA-256 hex of θ's fp32 little-endian bytes (Engine.paramsHash()). */
  readonly thetaHash: string;
}

/** A validated GlobalState with θ's hash computed. The arrays are held, not copied. */
export function makeGlobalState(round: number, theta: Float32Array, momentum: Float32Array): GlobalState {
  if (!Number.isSafeInteger(round) || round < 0) throw new RangeError(invalidParameter('round', 'a non-negative safe integer', round));
  if (!types.isFloat32Array(theta)) throw new TypeError(invalidParameter('theta', 'a Float32Array', theta));
  if (!types.isFloat32Array(momentum)) throw new TypeError(invalidParameter('momentum', 'a Float32Array', momentum));
  if (theta.length === 0) throw new RangeError('theta is empty; the global state needs the parameters');
  if (momentum.length !== theta.length) {
    throw new RangeError(`momentum has ${momentum.length} elements but theta has ${theta.length}; they must match`);
  }
  return Object.freeze({ round, theta, momentum, thetaHash: paramsSha256(theta) });
}

function metadataOf(state: GlobalState): Record<string, string> {
  return { format: GLOBAL_STATE_FORMAT, round: String(state.round), theta_sha256: state.thetaHash };
}

function tensorsOf(state: GlobalState) {
  return [
    { name: 'theta', dtype: 'F32' as const, shape: [state.theta.length], data: state.theta },
    { name: 'momentum', dtype: 'F32' as const, shape: [state.momentum.length], data: state.momentum },
  ];
}

/** The state's bytes (a safetensors file) as pieces, without copying θ or the momentum. */
export function encodeGlobalState(state: GlobalState): Buffer[] {
  return encodeSafetensors(tensorsOf(state), metadataOf(state));
}

/** Checks parsed contents and builds the state; every problem is a CheckpointCorruptError naming `source`. */
function fromContents(contents: SafetensorsContents, source: string): GlobalState {
  const fail = (what: string) => new CheckpointCorruptError(`Global state ${source} is invalid: ${what}`);
  const { metadata, tensors } = contents;
  if (metadata.format !== GLOBAL_STATE_FORMAT) {
    throw fail(`metadata format is ${JSON.stringify(metadata.format)}, expected ${JSON.stringify(GLOBAL_STATE_FORMAT)}`);
  }
  const roundText = metadata.round ?? '';
  const round = /^(0|[1-9][0-9]*)$/.test(roundText) ? Number(roundText) : NaN;
  if (!Number.isSafeInteger(round)) throw fail(`metadata round ${JSON.stringify(metadata.round)} is not a non-negative integer`);
  const names = [...tensors.keys()].sort().join(', ');
  if (names !== 'momentum, theta') throw fail(`it holds tensors [${names}], expected exactly momentum and theta`);
  const theta = tensors.get('theta');
  const momentum = tensors.get('momentum');
  if (!theta || !momentum) throw fail('theta or momentum is missing');
  for (const [name, t] of [['theta', theta], ['momentum', momentum]] as const) {
    if (t.dtype !== 'F32' || t.shape.length !== 1) throw fail(`${name} is ${t.dtype} [${t.shape.join(', ')}], expected a 1-D F32 tensor`);
  }
  if (theta.data.length === 0) throw fail('theta is empty');
  if (theta.data.length !== momentum.data.length) throw fail(`theta has ${theta.data.length} elements but momentum has ${momentum.data.length}`);
  const state = makeGlobalState(round, theta.data as Float32Array, momentum.data as Float32Array);
  if (state.thetaHash !== metadata.theta_sha256) {
    throw fail(`theta's SHA-256 is ${state.thetaHash} but the file records ${JSON.stringify(metadata.theta_sha256)} (checksum mismatch)`);
  }
  return state;
}

/** Parses a payload held in memory (a FetchState download); `source` names it in errors. */
export function decodeGlobalState(payload: Uint8Array, source = 'payload'): GlobalState {
  return fromContents(decodeSafetensors(payload, source), source);
}

/** Path of the global state file in `stateDir`. */
export function globalStatePath(stateDir: string): string {
  return path.join(stateDir, GLOBAL_STATE_FILE);
}

/** Writes the state atomically (temp file, fsync, rename, directory fsync) into `stateDir`. */
export async function saveGlobalState(stateDir: string, state: GlobalState): Promise<void> {
  await fs.promises.mkdir(stateDir, { recursive: true });
  await writeSafetensors(globalStatePath(stateDir), tensorsOf(state), metadataOf(state));
}

/**
 * The committed state in `stateDir`, or undefined when there is none (a fresh run). A file that is
 * truncated, malformed or fails its hash is refused with CHECKPOINT_CORRUPT naming it; never replaced.
 */
export async function loadGlobalState(stateDir: string): Promise<GlobalState | undefined> {
  const file = globalStatePath(stateDir);
  const contents = await readStateFile(file, `the coordinator's committed state ${file} is unusable (restore it or start a fresh state directory)`);
  if (!contents) return undefined;
  return fromContents(contents, file);
}

// Checkpoints as safetensors with Hugging Face GPT-2 tensor names (Conv1D weights stored (in, out), i.e.
// transposed from our (out, in)), AdamW moments as flat tensors, and run metadata with a params checksum.
import { types } from 'node:util';
import { createHash } from 'crypto';
import { CheckpointCorruptError } from '../errors';
import { invalidParameter, ModelConfig, parseModelConfig } from './model-config';
import { numParams, paramLayout } from './param-layout';
import { decodeSafetensors, encodeSafetensors, NamedTensor, readSafetensors, SafetensorsContents } from './safetensors';
import { writeFileAtomic } from './atomic-write';

export const CHECKPOINT_FORMAT = 'covenant-checkpoint';
export const CHECKPOINT_VERSION = '1';
export const ADAM_M_TENSOR = 'covenant.adam_m';
export const ADAM_V_TENSOR = 'covenant.adam_v';
/** Metadata keys written by saveCheckpoint; `extra` may not use them. */
export const RESERVED_METADATA = ['format', 'version', 'model', 'step', 'params_sha256', 'optimizer_sha256'] as const;

export interface Checkpoint {
  model: ModelConfig;
  /** Flat fp32 parameters in the engine's layout (param-layout.ts). */
  params: Float32Array;
  /** AdamW first and second moments, same layout as params; both or neither. */
  adamM?: Float32Array;
  adamV?: Float32Array;
  /** Optimizer steps taken. */
  step: number;
  /** Run metadata (round, sync hash, …), stored in __metadata__. */
  extra?: Record<string, string>;
}

export interface LoadedCheckpoint extends Checkpoint {
  /** The whole __metadata__. */
  metadata: Record<string, string>;
  /** __metadata__ without the reserved keys. */
  extra: Record<string, string>;
}

/** One tensor of the checkpoint and where it lives in the flat buffer. */
export interface CheckpointTensor {
  /** Hugging Face GPT-2 name. */
  name: string;
  /** Shape in the file. */
  shape: number[];
  /** Element offset in the flat buffer. */
  offset: number;
  /** Stored transposed: our (rows, cols) slice is the file's (cols, rows). */
  transposed: boolean;
  rows: number;
  cols: number;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** SHA-256 (hex) of the flat fp32 parameters' little-endian bytes; the engine's paramsHash() agrees. */
export function paramsSha256(params: Float32Array): string {
  if (!types.isFloat32Array(params)) throw new TypeError(invalidParameter('params', 'a Float32Array', params));
  return createHash('sha256').update(bytesOf(params)).digest('hex');
}

function optimizerSha256(m: Float32Array, v: Float32Array): string {
  return createHash('sha256').update(bytesOf(m)).update(bytesOf(v)).digest('hex');
}

/** The file's tensors for a model shape, in file order: wte, wpe, h.0 … h.{L-1}, ln_f. */
export function checkpointTensors(cfg: ModelConfig): CheckpointTensor[] {
  const L = cfg.numLayers;
  const at = new Map(paramLayout(cfg).map((t) => [t.name, t]));
  const whole = (name: string, ours: string): CheckpointTensor => {
    const t = at.get(ours)!;
    const [rows, cols] = t.shape.length === 2 ? t.shape : [1, t.shape[0]];
    return { name, shape: [...t.shape], offset: t.offset, transposed: false, rows, cols };
  };
  // Layer i of a stacked (L, ...) tensor; `transpose` for Conv1D weights.
  const layer = (name: string, ours: string, i: number, transpose: boolean): CheckpointTensor => {
    const t = at.get(ours)!;
    const per = t.size / L;
    const inner = t.shape.slice(1);
    const [rows, cols] = inner.length === 2 ? inner : [1, inner[0]];
    const shape = transpose ? [cols, rows] : inner;
    return { name, shape, offset: t.offset + i * per, transposed: transpose, rows, cols };
  };
  const out = [whole('wte.weight', 'wte'), whole('wpe.weight', 'wpe')];
  for (let i = 0; i < L; i++) {
    const h = `h.${i}`;
    out.push(
      layer(`${h}.ln_1.weight`, 'ln1w', i, false),
      layer(`${h}.ln_1.bias`, 'ln1b', i, false),
      layer(`${h}.attn.c_attn.weight`, 'qkvw', i, true),
      layer(`${h}.attn.c_attn.bias`, 'qkvb', i, false),
      layer(`${h}.attn.c_proj.weight`, 'attprojw', i, true),
      layer(`${h}.attn.c_proj.bias`, 'attprojb', i, false),
      layer(`${h}.ln_2.weight`, 'ln2w', i, false),
      layer(`${h}.ln_2.bias`, 'ln2b', i, false),
      layer(`${h}.mlp.c_fc.weight`, 'fcw', i, true),
      layer(`${h}.mlp.c_fc.bias`, 'fcb', i, false),
      layer(`${h}.mlp.c_proj.weight`, 'fcprojw', i, true),
      layer(`${h}.mlp.c_proj.bias`, 'fcprojb', i, false),
    );
  }
  out.push(whole('ln_f.weight', 'lnfw'), whole('ln_f.bias', 'lnfb'));
  return out;
}

/** dst (cols, rows) = transpose of src (rows, cols), in 32×32 tiles to stay in cache. */
function transpose(dst: Float32Array, dstOff: number, src: Float32Array, srcOff: number, rows: number, cols: number): void {
  const TILE = 32;
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const r1 = Math.min(r0 + TILE, rows);
    for (let c0 = 0; c0 < cols; c0 += TILE) {
      const c1 = Math.min(c0 + TILE, cols);
      for (let r = r0; r < r1; r++) {
        const s = srcOff + r * cols;
        for (let c = c0; c < c1; c++) dst[dstOff + c * rows + r] = src[s + c];
      }
    }
  }
}

function checkFlat(name: string, a: unknown, n: number): Float32Array {
  if (!types.isFloat32Array(a)) throw new TypeError(invalidParameter(name, 'a Float32Array', a));
  if (a.length !== n) throw new RangeError(invalidParameter(`${name}.length`, `${n} (numParams of the model)`, a.length));
  return a;
}

/** The checkpoint's bytes as pieces: header, then each tensor (untransposed ones are views, not copies). */
export function encodeCheckpoint(ckpt: Checkpoint): Buffer[] {
  if (typeof ckpt !== 'object' || ckpt === null) throw new TypeError(invalidParameter('checkpoint', 'an object', ckpt));
  const model = parseModelConfig(ckpt.model, 'checkpoint.model');
  const n = numParams(model);
  const params = checkFlat('checkpoint.params', ckpt.params, n);
  if ((ckpt.adamM === undefined) !== (ckpt.adamV === undefined)) {
    throw new TypeError('checkpoint.adamM and checkpoint.adamV go together: give both or neither');
  }
  const adamM = ckpt.adamM === undefined ? undefined : checkFlat('checkpoint.adamM', ckpt.adamM, n);
  const adamV = ckpt.adamV === undefined ? undefined : checkFlat('checkpoint.adamV', ckpt.adamV, n);
  if (!Number.isSafeInteger(ckpt.step) || ckpt.step < 0) throw new RangeError(invalidParameter('checkpoint.step', 'a non-negative integer', ckpt.step));

  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(ckpt.extra ?? {})) {
    if ((RESERVED_METADATA as readonly string[]).includes(k)) throw new RangeError(`checkpoint.extra.${k} is reserved for the checkpoint itself`);
    if (typeof v !== 'string') throw new TypeError(invalidParameter(`checkpoint.extra.${k}`, 'a string', v));
    metadata[k] = v;
  }
  metadata.format = CHECKPOINT_FORMAT;
  metadata.version = CHECKPOINT_VERSION;
  metadata.model = JSON.stringify(model);
  metadata.step = String(ckpt.step);
  metadata.params_sha256 = paramsSha256(params);
  if (adamM && adamV) metadata.optimizer_sha256 = optimizerSha256(adamM, adamV);

  const tensors: NamedTensor[] = checkpointTensors(model).map((t) => {
    const size = t.rows * t.cols;
    let data = params.subarray(t.offset, t.offset + size);
    if (t.transposed) {
      const out = new Float32Array(size);
      transpose(out, 0, params, t.offset, t.rows, t.cols);
      data = out;
    }
    return { name: t.name, dtype: 'F32', shape: t.shape, data };
  });
  if (adamM && adamV) {
    tensors.push({ name: ADAM_M_TENSOR, dtype: 'F32', shape: [n], data: adamM }, { name: ADAM_V_TENSOR, dtype: 'F32', shape: [n], data: adamV });
  }
  return encodeSafetensors(tensors, metadata);
}

/** Checks the metadata and tensors and reassembles the flat buffers bit for bit. */
function fromContents(contents: SafetensorsContents, source: string): LoadedCheckpoint {
  const fail = (what: string) => new CheckpointCorruptError(`Checkpoint ${source} is invalid: ${what}`);
  const { metadata, tensors } = contents;
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw fail(`__metadata__.format is ${JSON.stringify(metadata.format)}, expected "${CHECKPOINT_FORMAT}" (not a covenant checkpoint)`);
  }
  if (metadata.version !== CHECKPOINT_VERSION) throw fail(`__metadata__.version is ${JSON.stringify(metadata.version)}, expected "${CHECKPOINT_VERSION}"`);
  let model: ModelConfig;
  try {
    model = parseModelConfig(JSON.parse(metadata.model ?? 'null'), 'model');
  } catch (e) {
    throw fail(`__metadata__.model is not a valid model config: ${(e as Error).message}`);
  }
  if (!/^\d+$/.test(metadata.step ?? '') || !Number.isSafeInteger(Number(metadata.step))) {
    throw fail(`__metadata__.step is ${JSON.stringify(metadata.step)}, expected a non-negative integer`);
  }
  const step = Number(metadata.step);
  if (!/^[0-9a-f]{64}$/.test(metadata.params_sha256 ?? '')) throw fail('__metadata__.params_sha256 is missing or not 64 hex digits');

  const n = numParams(model);
  const params = new Float32Array(n);
  const expected = checkpointTensors(model);
  const known = new Set([...expected.map((t) => t.name), ADAM_M_TENSOR, ADAM_V_TENSOR]);
  for (const name of tensors.keys()) {
    if (!known.has(name)) throw fail(`it holds a tensor ${name} that a ${model.numLayers}-layer covenant GPT-2 does not have`);
  }
  const take = (name: string, shape: number[]): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw fail(`tensor ${name} is missing`);
    if (t.dtype !== 'F32') throw fail(`tensor ${name} has dtype ${t.dtype}, expected F32`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw fail(`tensor ${name} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return t.data as Float32Array;
  };
  for (const t of expected) {
    const data = take(t.name, t.shape);
    if (t.transposed) transpose(params, t.offset, data, 0, t.cols, t.rows);
    else params.set(data, t.offset);
  }
  const actual = paramsSha256(params);
  if (actual !== metadata.params_sha256) {
    throw fail(`the parameters' SHA-256 is ${actual} but __metadata__.params_sha256 says ${metadata.params_sha256} (corrupted data)`);
  }

  let adamM: Float32Array | undefined;
  let adamV: Float32Array | undefined;
  if (tensors.has(ADAM_M_TENSOR) || tensors.has(ADAM_V_TENSOR) || metadata.optimizer_sha256 !== undefined) {
    adamM = take(ADAM_M_TENSOR, [n]);
    adamV = take(ADAM_V_TENSOR, [n]);
    if (metadata.optimizer_sha256 !== undefined) {
      const opt = optimizerSha256(adamM, adamV);
      if (opt !== metadata.optimizer_sha256) {
        throw fail(`the optimizer moments' SHA-256 is ${opt} but __metadata__.optimizer_sha256 says ${metadata.optimizer_sha256} (corrupted data)`);
      }
    }
  }

  const extra: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) if (!(RESERVED_METADATA as readonly string[]).includes(k)) extra[k] = v;
  return { model, params, adamM, adamV, step, metadata, extra };
}

/** Parses a checkpoint held in memory (e.g. received from a peer). */
export function decodeCheckpoint(buf: Uint8Array, source = 'buffer'): LoadedCheckpoint {
  return fromContents(decodeSafetensors(buf, source), source);
}

/** Writes a checkpoint atomically (temp file, fsync, rename, fsync dir). */
export async function saveCheckpoint(file: string, ckpt: Checkpoint): Promise<void> {
  await writeFileAtomic(file, encodeCheckpoint(ckpt));
}

/** Reads and checks a checkpoint; any problem is a CheckpointCorruptError (code CHECKPOINT_CORRUPT). */
export async function loadCheckpoint(file: string): Promise<LoadedCheckpoint> {
  return fromContents(await readSafetensors(file), file);
}

// The safetensors format: u64 LE header length N, N bytes of JSON header (space-padded so the data starts
// at a multiple of 8), then the tensor data; offsets are relative to the data start. Readers check it all.
import { types } from 'node:util';
import * as fs from 'fs';
import * as os from 'os';
import { CheckpointCorruptError, hasCode } from '../errors';
import { invalidParameter } from './model-config';
import { writeFileAtomic } from './atomic-write';

/** The dtypes we write and read; a file holding others is refused. */
export type Dtype = 'F32' | 'I32' | 'U8';
export type TensorArray = Float32Array | Int32Array | Uint8Array;

const DTYPE_BYTES: Record<Dtype, number> = { F32: 4, I32: 4, U8: 1 };
const ARRAY_OF: Record<Dtype, new (n: number) => TensorArray> = { F32: Float32Array, I32: Int32Array, U8: Uint8Array };

export interface Tensor {
  dtype: Dtype;
  /** Row-major; [] is a scalar. */
  shape: number[];
  data: TensorArray;
}

export interface NamedTensor extends Tensor {
  name: string;
}

export interface SafetensorsContents {
  metadata: Record<string, string>;
  /** In the order of the data section. */
  tensors: Map<string, Tensor>;
}

/** Where one tensor lies, from a validated header. */
interface TensorSpan {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

interface Layout {
  metadata: Record<string, string>;
  spans: TensorSpan[];
  /** Absolute file offset of the data section. */
  dataStart: number;
}

const METADATA_KEY = '__metadata__';
/** Same cap as the reference implementation: a larger header is refused before it is parsed. */
const MAX_HEADER_BYTES = 100_000_000;

function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('safetensors files are little-endian; this machine is not');
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function arrayDtype(data: unknown): Dtype | undefined {
  if (types.isFloat32Array(data)) return 'F32';
  if (types.isInt32Array(data)) return 'I32';
  if (types.isUint8Array(data)) return 'U8';
  return undefined;
}

/** The file's bytes as pieces (header, then each tensor's data without copying). */
export function encodeSafetensors(tensors: readonly NamedTensor[], metadata: Record<string, string> = {}): Buffer[] {
  assertLittleEndian();
  const header: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new TypeError(invalidParameter(`metadata.${k}`, 'a string', v));
  }
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  const pieces: Buffer[] = [];
  let offset = 0;
  tensors.forEach((t, i) => {
    const where = `tensors[${i}]`;
    if (typeof t.name !== 'string' || t.name === '' || t.name === METADATA_KEY) {
      throw new TypeError(invalidParameter(`${where}.name`, 'a non-empty name other than __metadata__', t.name));
    }
    if (t.name in header) throw new RangeError(`${where}.name ${JSON.stringify(t.name)} is used twice`);
    const dtype = arrayDtype(t.data);
    if (dtype === undefined || dtype !== t.dtype) {
      throw new TypeError(invalidParameter(`${where}.data (${t.name})`, `the typed array of dtype ${t.dtype}`, t.data?.constructor?.name));
    }
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new TypeError(invalidParameter(`${where}.shape (${t.name})`, 'an array of non-negative integers', t.shape));
    }
    if (elements(t.shape) !== t.data.length) {
      throw new RangeError(`${where} (${t.name}): shape [${t.shape.join(', ')}] has ${elements(t.shape)} elements but data has ${t.data.length}`);
    }
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    pieces.push(bytes);
  });
  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonBytes) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.byteLength));
  return [prefix, headerBytes, ...pieces];
}

/** Validates a header against the file size; every problem is a CheckpointCorruptError naming it. */
function parseLayout(headerBytes: Uint8Array, fileSize: number, source: string): Layout {
  const fail = (what: string) => new CheckpointCorruptError(`Safetensors file ${source} is invalid: ${what}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw fail(`the header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw fail('the header is not a JSON object');

  const metadata: Record<string, string> = {};
  const spans: TensorSpan[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw fail(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail(`tensor ${name} is not an object`);
    const entry = raw as Record<string, unknown>;
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!(field in entry)) throw fail(`tensor ${name} has no ${field}`);
    }
    const dtype = entry.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw fail(`tensor ${name} has dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw fail(`tensor ${name} has shape ${JSON.stringify(shape)} (expected an array of non-negative integers)`);
    }
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw fail(`tensor ${name} has data_offsets ${JSON.stringify(offsets)} (expected [begin, end], non-negative integers)`);
    }
    const [begin, end] = offsets as number[];
    if (end < begin) throw fail(`tensor ${name} has data_offsets [${begin}, ${end}] that end before they begin`);
    const need = elements(shape) * DTYPE_BYTES[dtype as Dtype];
    if (end - begin !== need) {
      throw fail(`tensor ${name} spans ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${need}`);
    }
    spans.push({ name, dtype: dtype as Dtype, shape: shape as number[], begin, end });
  }

  // The data section must be exactly the tensors, back to back, in some order.
  const dataStart = 8 + headerBytes.byteLength;
  const dataBytes = fileSize - dataStart;
  const sorted = [...spans].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const needed = sorted.reduce((a, s) => Math.max(a, s.end), 0);
  if (needed > dataBytes) {
    throw fail(`the file is truncated: tensors need ${needed} data bytes but the file has ${dataBytes} after the header`);
  }
  let pos = 0;
  let prev = '';
  for (const s of sorted) {
    if (s.begin < pos) throw fail(`tensors ${prev} and ${s.name} overlap (bytes [${s.begin}, ${pos}) of the data)`);
    if (s.begin > pos) throw fail(`bytes [${pos}, ${s.begin}) of the data belong to no tensor`);
    pos = s.end;
    prev = s.name;
  }
  if (pos < dataBytes) throw fail(`${dataBytes - pos} bytes follow the last tensor`);
  return { metadata, spans: sorted, dataStart };
}

function headerLength(prefix: Uint8Array, fileSize: number, source: string): number {
  const fail = (what: string) => new CheckpointCorruptError(`Safetensors file ${source} is invalid: ${what}`);
  if (fileSize < 8) throw fail(`it has ${fileSize} bytes, fewer than the 8-byte header length`);
  const n = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(fileSize - 8)) throw fail(`the header length ${n} goes beyond the end of the file (${fileSize} bytes)`);
  if (n > BigInt(MAX_HEADER_BYTES)) throw fail(`the header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`);
  return Number(n);
}

/** Parses a whole file held in memory; tensors are aligned copies. `source` names it in errors. */
export function decodeSafetensors(buf: Uint8Array, source = 'buffer'): SafetensorsContents {
  assertLittleEndian();
  const n = headerLength(buf, buf.byteLength, source);
  const layout = parseLayout(buf.subarray(8, 8 + n), buf.byteLength, source);
  const tensors = new Map<string, Tensor>();
  for (const s of layout.spans) {
    const data = new ARRAY_OF[s.dtype](elements(s.shape));
    new Uint8Array(data.buffer).set(buf.subarray(layout.dataStart + s.begin, layout.dataStart + s.end));
    tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data });
  }
  return { metadata: layout.metadata, tensors };
}

async function readFully(handle: fs.promises.FileHandle, target: Uint8Array, position: number, source: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const len = Math.min(target.byteLength - done, 1 << 30);
    const { bytesRead } = await handle.read(target, done, len, position + done);
    if (bytesRead === 0) throw new CheckpointCorruptError(`Safetensors file ${source} is invalid: it ended while being read (truncated?)`);
    done += bytesRead;
  }
}

/** Reads a file straight into one aligned typed array per tensor (no whole-file buffer). */
export async function readSafetensors(file: string): Promise<SafetensorsContents> {
  assertLittleEndian();
  const handle = await fs.promises.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const prefix = new Uint8Array(Math.min(8, size));
    await readFully(handle, prefix, 0, file);
    const n = headerLength(prefix, size, file);
    const headerBytes = new Uint8Array(n);
    await readFully(handle, headerBytes, 8, file);
    const layout = parseLayout(headerBytes, size, file);
    const tensors = new Map<string, Tensor>();
    for (const s of layout.spans) {
      const data = new ARRAY_OF[s.dtype](elements(s.shape));
      await readFully(handle, new Uint8Array(data.buffer), layout.dataStart + s.begin, file);
      tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data });
    }
    return { metadata: layout.metadata, tensors };
  } finally {
    await handle.close();
  }
}

/**
 * A state file's contents, or undefined when it does not exist. A damaged one is refused with
 * CHECKPOINT_CORRUPT, the message ending in `; ${unusable}` (what the file is and what to do about it).
 */
export async function readStateFile(file: string, unusable: string): Promise<SafetensorsContents | undefined> {
  try {
    return await readSafetensors(file);
  } catch (e) {
    if (hasCode(e, 'ENOENT')) return undefined;
    if (e instanceof CheckpointCorruptError) throw new CheckpointCorruptError(`${e.message}; ${unusable}`, { cause: e });
    throw e;
  }
}

/** Writes a safetensors file atomically (temp file, fsync, rename). */
export async function writeSafetensors(file: string, tensors: readonly NamedTensor[], metadata: Record<string, string> = {}): Promise<void> {
  await writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

// Tests for the safetensors reader and writer: round trip, layout, and refusal of damaged files.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeSafetensors, encodeSafetensors, NamedTensor, readSafetensors, writeSafetensors } from '../src/train/safetensors';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-st-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const tensors: NamedTensor[] = [
  { name: 'a', dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2, 3.5, NaN, -0, 1e-40]) },
  { name: 'b.bias', dtype: 'F32', shape: [3], data: Float32Array.from([Infinity, -Infinity, 7]) },
  { name: 'steps', dtype: 'I32', shape: [], data: Int32Array.from([-42]) },
  { name: 'bytes', dtype: 'U8', shape: [5], data: Uint8Array.from([1, 2, 3, 4, 5]) },
  { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
];
const metadata = { format: 'test', note: 'ünïcödé' };

function bytes(ts = tensors, md: Record<string, string> = metadata): Buffer {
  return Buffer.concat(encodeSafetensors(ts, md));
}

/** A file with the given JSON header and data length. */
function craft(header: unknown, dataBytes: number): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]);
}

function corrupt(buf: Uint8Array): string {
  try {
    decodeSafetensors(buf, 'x.safetensors');
  } catch (e) {
    expect((e as { code?: string }).code).toBe('CHECKPOINT_CORRUPT');
    expect((e as Error).message).toContain('x.safetensors');
    return (e as Error).message;
  }
  throw new Error('decodeSafetensors accepted a damaged file');
}

test('round trip through a file is bit-identical, with metadata', async () => {
  const file = path.join(tmp, 'm.safetensors');
  await writeSafetensors(file, tensors, metadata);
  expect(fs.readdirSync(tmp)).toEqual(['m.safetensors']); // no temp file left behind
  for (const got of [await readSafetensors(file), decodeSafetensors(fs.readFileSync(file))]) {
    expect(got.metadata).toEqual(metadata);
    expect([...got.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const r = got.tensors.get(t.name)!;
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect(r.data.constructor).toBe(t.data.constructor);
      expect(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength)).toEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      expect(r.data.byteOffset % 8).toBe(0);
    }
  }
});

test('layout: u64 header length, space padding to 8, data offsets relative to the data start', () => {
  const buf = bytes();
  const n = Number(buf.readBigUInt64LE(0));
  expect((8 + n) % 8).toBe(0);
  const headerText = buf.subarray(8, 8 + n).toString('utf8');
  expect(headerText).toMatch(/^\{.*\} *$/);
  const header = JSON.parse(headerText);
  expect(header.__metadata__).toEqual(metadata);
  expect(header.a).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
  expect(header['b.bias'].data_offsets).toEqual([24, 36]);
  expect(buf.readFloatLE(8 + n + 8)).toBe(3.5);
  expect(buf.length).toBe(8 + n + 24 + 12 + 4 + 5);
});

test('truncated files are refused', async () => {
  const buf = bytes();
  expect(corrupt(buf.subarray(0, buf.length - 1))).toMatch(/truncated/);
  expect(corrupt(buf.subarray(0, 5))).toMatch(/fewer than the 8-byte header length/);
  expect(corrupt(buf.subarray(0, 20))).toMatch(/header length \d+ goes beyond the end of the file/);
  const file = path.join(tmp, 't.safetensors');
  fs.writeFileSync(file, buf.subarray(0, buf.length - 3));
  await expect(readSafetensors(file)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringMatching(/truncated/) });
});

test('garbage headers are refused', () => {
  const junk = Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('this is not json')]);
  expect(corrupt(junk)).toMatch(/not valid UTF-8 JSON/);
  expect(corrupt(craft([1, 2], 0))).toMatch(/not a JSON object/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [1] } }, 4))).toMatch(/tensor a has no data_offsets/);
  expect(corrupt(craft({ a: { dtype: 'Q4', shape: [1], data_offsets: [0, 4] } }, 4))).toMatch(/tensor a has dtype "Q4"/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4))).toMatch(/shape/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4))).toMatch(/spans 4 bytes but shape \[2\] of F32 needs 8/);
  expect(corrupt(craft({ __metadata__: { step: 3 } }, 0))).toMatch(/__metadata__.step is not a string/);
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(2n ** 62n);
  expect(corrupt(huge)).toMatch(/beyond the end of the file/);
});

test('overlapping, gapped, out-of-range offsets and trailing bytes are refused', () => {
  expect(
    corrupt(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12)),
  ).toMatch(/tensors a and b overlap/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8))).toMatch(/bytes \[0, 4\) of the data belong to no tensor/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 8))).toMatch(/end before they begin/);
  expect(corrupt(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 8))).toMatch(/4 bytes follow the last tensor/);
});

test('the writer refuses bad tensors and metadata', () => {
  expect(() => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/shape \[3\] has 3 elements but data has 2/);
  expect(() => encodeSafetensors([{ name: 'a', dtype: 'I32', shape: [2], data: new Float32Array(2) }])).toThrow(TypeError);
  expect(() => encodeSafetensors([], { a: 1 as unknown as string })).toThrow(/metadata.a/);
  const t = { name: 'a', dtype: 'F32' as const, shape: [1], data: new Float32Array(1) };
  expect(() => encodeSafetensors([t, t])).toThrow(/used twice/);
});

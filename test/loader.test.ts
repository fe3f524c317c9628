// Tests for the data loader: deterministic training windows of real consecutive tokens, sequential eval
// windows, and refusal of tampered shards or manifests.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataLoader, datasetInfo, windowStart } from '../src/data/loader';
import { Manifest, MANIFEST_FILE, manifestHash, writeManifest } from '../src/data/manifest';
import { prepareData } from '../src/data/prepare';
import { writeShard } from '../src/data/shard';
import { createHash } from 'crypto';

let tmp: string;
let dataDir: string;
let manifest: Manifest;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-loader-'));
  const src = path.join(tmp, 'src');
  fs.mkdirSync(src);
  // Every word is distinct, so equal windows mean equal offsets.
  for (let i = 0; i < 30; i++) {
    const words = Array.from({ length: 20 + 3 * i }, (_, j) => `w${i}.${j}`);
    fs.writeFileSync(path.join(src, `d${i}.txt`), `Text ${i}: ${words.join(' ')}`);
  }
  dataDir = path.join(tmp, 'data');
  // Small shards so that windows cross shard boundaries.
  manifest = await prepareData({ inputs: [src], tokenizer: 'bytes', outDir: dataDir, shardTokens: 500, valFraction: 0.2 });
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The split's whole token stream, read shard by shard without the loader. */
function stream(split: 'train' | 'val'): Int32Array {
  const parts = manifest.shards.filter((s) => s.split === split).map((s) => fs.readFileSync(path.join(dataDir, s.file)).subarray(1024));
  const bytes = Buffer.concat(parts);
  return Int32Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
}

/** A fresh copy of the data directory to tamper with. */
function copyData(): string {
  const dir = fs.mkdtempSync(path.join(tmp, 'copy-'));
  for (const f of fs.readdirSync(dataDir)) fs.copyFileSync(path.join(dataDir, f), path.join(dir, f));
  return dir;
}

test('windows are deterministic and differ across steps, rows and seeds', () => {
  const a = DataLoader.open(dataDir, { split: 'train' });
  const b = DataLoader.open(dataDir, { split: 'train' });
  expect(a.batch(7, 4, 16, 1234)).toEqual(b.batch(7, 4, 16, 1234));
  expect(a.batch(7, 4, 16, 1234)).not.toEqual(a.batch(8, 4, 16, 1234));
  expect(a.batch(7, 4, 16, 1234)).not.toEqual(a.batch(7, 4, 16, 1235));
  const rows = a.batch(0, 8, 16, 1);
  const firstRow = rows.subarray(0, 17).join();
  expect(Array.from({ length: 8 }, (_, r) => rows.subarray(r * 17, r * 17 + 17).join()).filter((r) => r === firstRow)).toHaveLength(1);
  expect(windowStart(1, 0, 0, 1_000_000)).toBe(windowStart(1, 0, 0, 1_000_000));
});

test('splitmix64 windows match an independent computation', () => {
  const M = (1n << 64n) - 1n;
  const mix = (x: bigint) => {
    let z = (x + 0x9e3779b97f4a7c15n) & M;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    return z ^ (z >> 31n);
  };
  // splitmix64 reference output for state 0 after one increment.
  expect(mix(0n)).toBe(0xe220a8397b1dcdafn);
  for (const [seed, step, row] of [[0, 0, 0], [5, 17, 3], [123456789, 1000, 63], [-1, 2, 1]]) {
    const h = mix(mix(mix(BigInt.asUintN(64, BigInt(seed))) ^ BigInt(step)) ^ BigInt(row));
    expect(windowStart(seed, step, row, 12345)).toBe(Number(h % 12345n));
  }
});

test('each row is T+1 real consecutive tokens of the train stream', () => {
  const loader = DataLoader.open(dataDir, { split: 'train' });
  const all = stream('train');
  expect(loader.numTokens).toBe(all.length);
  const T = 64;
  const B = 6;
  for (let step = 0; step < 20; step++) {
    const batch = loader.batch(step, B, T, 99);
    expect(batch).toHaveLength(B * (T + 1));
    for (let b = 0; b < B; b++) {
      const start = windowStart(99, step, b, all.length - T);
      expect(batch.subarray(b * (T + 1), (b + 1) * (T + 1))).toEqual(all.subarray(start, start + T + 1));
    }
  }
});

test('eval batches walk the val split with non-overlapping windows', () => {
  const loader = DataLoader.open(dataDir, { split: 'val' });
  const all = stream('val');
  const B = 2;
  const T = 32;
  const batches = [...loader.evalBatches(B, T)];
  expect(batches).toHaveLength(Math.floor(Math.floor((all.length - 1) / T) / B));
  batches.forEach((batch, i) => {
    for (let b = 0; b < B; b++) {
      const start = (i * B + b) * T;
      expect(batch.subarray(b * (T + 1), (b + 1) * (T + 1))).toEqual(all.subarray(start, start + T + 1));
    }
  });
  expect([...loader.evalBatches(B, T, 2)]).toHaveLength(2);
  expect(loader.evalBatchCount(B, T, 2)).toBe(2);
});

test('too short a split is refused, naming split, tokens and T', () => {
  const loader = DataLoader.open(dataDir, { split: 'val' });
  const T = loader.numTokens;
  expect(() => loader.batch(0, 1, T, 0)).toThrow(new RegExp(`Split val .* has ${loader.numTokens} tokens .*T = ${T}`));
  expect(() => loader.evalBatches(1000, 1000)).toThrow(RangeError);
  expect(() => loader.batch(0, 0, 8, 0)).toThrow(/B/);
});

test('dataset info from the manifest', () => {
  const info = datasetInfo(dataDir);
  expect(info.tokenizer).toBe('bytes');
  expect(info.vocabSize).toBe(257);
  expect(info.eotToken).toBe(256);
  expect(info.manifestHash).toBe(manifestHash(manifest));
  expect(info.trainTokens).toBe(stream('train').length);
});

test('a flipped byte in a shard is detected, naming the shard and both hashes', () => {
  const dir = copyData();
  const entry = manifest.shards.find((s) => s.split === 'train')!;
  const file = path.join(dir, entry.file);
  const bytes = fs.readFileSync(file);
  bytes[2000] ^= 0x01;
  fs.writeFileSync(file, bytes);
  const actual = createHash('sha256').update(bytes).digest('hex');
  let err: unknown;
  try {
    DataLoader.open(dir, { split: 'train' });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(Error);
  expect((err as { code?: string }).code).toBe('DATA_CORRUPT');
  expect((err as Error).message).toContain(entry.file);
  expect((err as Error).message).toContain(entry.sha256);
  expect((err as Error).message).toContain(actual);
  // The val split does not read the damaged train shard.
  expect(() => DataLoader.open(dir, { split: 'val' })).not.toThrow();
  // Without verification the damaged (but well-formed) shard still loads.
  expect(() => DataLoader.open(dir, { split: 'train', verify: false })).not.toThrow();
});

test('an edited manifest hash is refused', () => {
  const dir = copyData();
  const edited: Manifest = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8'));
  const i = edited.shards.findIndex((s) => s.split === 'val');
  edited.shards[i].sha256 = '0'.repeat(64);
  writeManifest(dir, edited);
  expect(() => DataLoader.open(dir, { split: 'val' })).toThrow(expect.objectContaining({ code: 'DATA_CORRUPT', message: expect.stringContaining(edited.shards[i].file) }));
});

test('a malformed manifest or shard is refused with a hint', () => {
  const dir = copyData();
  fs.writeFileSync(path.join(dir, MANIFEST_FILE), '{"format": "covenant-shards", "version": 2}');
  expect(() => DataLoader.open(dir, { split: 'train' })).toThrow(/manifest.version.*HINT/);
  const dir2 = copyData();
  const entry = manifest.shards[0];
  writeShard(path.join(dir2, entry.file), new Uint16Array([1, 2, 3]));
  expect(() => DataLoader.open(dir2, { split: entry.split, verify: false })).toThrow(/holds 3 tokens but the manifest expects/);
  fs.truncateSync(path.join(dir2, entry.file), 1028);
  expect(() => DataLoader.open(dir2, { split: entry.split, verify: false })).toThrow(/header says 3 tokens .* HINT: re-run `covenant data prepare`/);
});

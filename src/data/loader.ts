// Reads one split of a prepared data directory (shards checked against the manifest's SHA-256) and cuts it
// into batches: training windows at offsets that are a pure function of (seed, step, row), and
// sequential non-overlapping evaluation windows.
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { CovenantError, DataCorruptError, hasCode } from '../errors';
import { invalidParameter } from '../train/model-config';
import { decodeShard } from './shard';
import { Manifest, manifestHash, readManifest, ShardEntry, Split, SPLITS, splitTokens } from './manifest';
import { TokenizerName } from './tokenizer';

export interface LoaderOptions {
  split: Split;
  /** Check each shard's SHA-256 against the manifest (default true). */
  verify?: boolean;
  /**
   * Allow shard files to be missing (a worker that fetches only the shards its windows need): the split's
   * size comes from the manifest, present shards are checked as usual, reading a missing one throws
   * ShardMissingError naming it; install() adds a shard later.
   */
  partial?: boolean;
}

/** A read touched a shard this (partial) loader does not hold yet. */
export class ShardMissingError extends CovenantError {
  constructor(readonly file: string) {
    super('SHARD_MISSING', `Shard ${file} is not here yet (a partial data directory): fetch it first`);
  }
}

/** Checks a shard's bytes against its manifest entry and decodes it; DataCorruptError naming `where` otherwise. */
export function checkShard(bytes: Uint8Array, entry: ShardEntry, manifest: Manifest, where: string, verify = true): Uint16Array {
  if (verify) {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== entry.sha256) {
      throw new DataCorruptError(`Shard ${where} is corrupt: its SHA-256 is ${actual} but the manifest expects ${entry.sha256}. ${HINT}`);
    }
  }
  const tokens = decodeShard(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), where);
  if (tokens.length !== entry.tokens) {
    throw new DataCorruptError(`Shard ${where} holds ${tokens.length} tokens but the manifest expects ${entry.tokens}. ${HINT}`);
  }
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] >= manifest.vocabSize) {
      throw new DataCorruptError(`Shard ${where} holds token ${tokens[i]} at index ${i}, outside the ${manifest.tokenizer} vocabulary of ${manifest.vocabSize}. ${HINT}`);
    }
  }
  return tokens;
}

const HINT = 'HINT: re-run `covenant data prepare` to rebuild the data directory.';
const MASK64 = (1n << 64n) - 1n;

/** splitmix64's output function on a 64-bit state (Steele, Lea, Flood 2014). */
export function splitmix64(x: bigint): bigint {
  let z = (x + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

function safeInt(v: unknown, name: string, min: number): number {
  if (typeof v !== 'number') throw new TypeError(invalidParameter(name, 'an integer', v));
  if (!Number.isSafeInteger(v) || v < min) {
    throw new RangeError(invalidParameter(name, min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`, v));
  }
  return v;
}

/**
 * Start of training window `row` of `step`, in [0, numStarts): with u64 arithmetic mod 2^64,
 * h = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ row), start = h mod numStarts.
 * A negative seed is taken mod 2^64. Anyone can recompute the windows a worker trained on.
 */
export function windowStart(seed: number, step: number, row: number, numStarts: number): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new TypeError(invalidParameter('seed', 'a safe integer', seed));
  safeInt(step, 'step', 0);
  safeInt(row, 'row', 0);
  safeInt(numStarts, 'numStarts', 1);
  const s = BigInt.asUintN(64, BigInt(seed));
  const h = splitmix64(splitmix64(splitmix64(s) ^ BigInt(step)) ^ BigInt(row));
  return Number(h % BigInt(numStarts));
}

export interface DatasetInfo {
  tokenizer: TokenizerName;
  vocabSize: number;
  eotToken: number;
  /** manifestHash(): what the swarm compares. */
  manifestHash: string;
  trainTokens: number;
  valTokens: number;
}

/** What a data directory holds, from its manifest alone (shards are not read). */
export function datasetInfo(dir: string): DatasetInfo {
  const m = readManifest(dir);
  return {
    tokenizer: m.tokenizer,
    vocabSize: m.vocabSize,
    eotToken: m.eotToken,
    manifestHash: manifestHash(m),
    trainTokens: splitTokens(m, 'train'),
    valTokens: splitTokens(m, 'val'),
  };
}

export class DataLoader {
  /** Token count of the split. */
  readonly numTokens: number;

  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    readonly split: Split,
    /** The split's shards in stream order (undefined: not here yet), their entries, and where each starts in the stream. */
    private readonly shards: Array<Uint16Array | undefined>,
    private readonly starts: number[],
    private readonly entries: ShardEntry[],
  ) {
    this.numTokens = entries.reduce((a, e) => a + e.tokens, 0);
  }

  /** Reads the manifest and every shard of the split, checking each against the manifest. */
  static open(dir: string, options: LoaderOptions): DataLoader {
    if (typeof dir !== 'string' || dir === '') throw new TypeError(invalidParameter('dir', 'a directory path', dir));
    if (typeof options !== 'object' || options === null) throw new TypeError(invalidParameter('options', 'an object', options));
    if (!(SPLITS as readonly string[]).includes(options.split)) throw new RangeError(invalidParameter('options.split', 'train or val', options.split));
    const verify = options.verify ?? true;
    const manifest = readManifest(dir);
    const shards: Array<Uint16Array | undefined> = [];
    const starts: number[] = [];
    const entries = manifest.shards.filter((s) => s.split === options.split);
    let total = 0;
    for (const entry of entries) {
      const file = path.join(dir, entry.file);
      let bytes: Buffer | undefined;
      try {
        bytes = fs.readFileSync(file);
      } catch (e) {
        if (!(options.partial && hasCode(e, 'ENOENT'))) {
          throw new DataCorruptError(`Cannot read shard ${file} listed in the manifest: ${(e as Error).message}. ${HINT}`, { cause: e });
        }
      }
      shards.push(bytes === undefined ? undefined : checkShard(bytes, entry, manifest, file, verify));
      starts.push(total);
      total += entry.tokens;
    }
    return new DataLoader(dir, manifest, options.split, shards, starts, entries);
  }

  /** The split's shard entries that stream tokens [start, start + length) touch, in order. */
  shardsFor(start: number, length: number): ShardEntry[] {
    const out: ShardEntry[] = [];
    for (let s = this.shardIndex(start); s < this.entries.length && this.starts[s] < start + length; s++) out.push(this.entries[s]);
    return out;
  }

  /** Where each shard of the split starts in the stream, and its token count. */
  shardRanges(): Array<{ start: number; tokens: number }> {
    return this.entries.map((e, i) => ({ start: this.starts[i], tokens: e.tokens }));
  }

  /** The entries of shards this loader does not hold. */
  missing(): ShardEntry[] {
    return this.entries.filter((_, i) => this.shards[i] === undefined);
  }

  /** Adds a shard's bytes (e.g. fetched from a peer) after checking them against the manifest. */
  install(file: string, bytes: Uint8Array): void {
    const i = this.entries.findIndex((e) => e.file === file);
    if (i < 0) throw new RangeError(`Shard ${file} is not in split ${this.split} of the manifest`);
    this.shards[i] = checkShard(bytes, this.entries[i], this.manifest, `${file} (received)`);
  }

  private shardIndex(start: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= start) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  get tokenizer(): TokenizerName {
    return this.manifest.tokenizer;
  }

  get vocabSize(): number {
    return this.manifest.vocabSize;
  }

  get eotToken(): number {
    return this.manifest.eotToken;
  }

  /** Copies stream tokens [start, start + length) into out[at…]; windows may span shards. */
  read(start: number, length: number, out: Int32Array, at = 0): void {
    if (start < 0 || length < 0 || start + length > this.numTokens) {
      throw new RangeError(`Tokens [${start}, ${start + length}) are outside split ${this.split} of ${this.numTokens} tokens`);
    }
    if (at < 0 || at + length > out.length) throw new RangeError(`out has ${out.length} elements, too few for ${length} tokens at ${at}`);
    let s = this.shardIndex(start);
    let pos = start - this.starts[s];
    let done = 0;
    while (done < length) {
      const shard = this.shards[s];
      if (!shard) throw new ShardMissingError(this.entries[s].file);
      const n = Math.min(length - done, shard.length - pos);
      out.set(shard.subarray(pos, pos + n), at + done);
      done += n;
      s++;
      pos = 0;
    }
  }

  private checkWindow(B: number, T: number): void {
    safeInt(B, 'B', 1);
    safeInt(T, 'T', 1);
    if (T + 1 > this.numTokens) {
      throw new RangeError(
        `Split ${this.split} of ${this.dir} has ${this.numTokens} tokens but a window needs T+1 = ${T + 1} (T = ${T}). ` +
          'HINT: prepare more data or use a shorter sequence length.',
      );
    }
  }

  /**
   * Training batch, (B, T+1) row-major: row b is the T+1 tokens starting at
   * windowStart(seed, step, b, numTokens - T); inputs are row[0..T), targets row[1..T].
   */
  batch(step: number, B: number, T: number, seed: number): Int32Array {
    this.checkWindow(B, T);
    const out = new Int32Array(B * (T + 1));
    const numStarts = this.numTokens - T;
    for (let b = 0; b < B; b++) this.read(windowStart(seed, step, b, numStarts), T + 1, out, b * (T + 1));
    return out;
  }

  /** How many evaluation batches evalBatches(B, T, maxBatches) yields. */
  evalBatchCount(B: number, T: number, maxBatches = Infinity): number {
    this.checkWindow(B, T);
    if (maxBatches !== Infinity) safeInt(maxBatches, 'maxBatches', 1);
    const windows = Math.floor((this.numTokens - 1) / T);
    return Math.min(Math.floor(windows / B), maxBatches);
  }

  /** Evaluation batch `index`, (B, T+1): window k = index*B + b starts at k*T, so inputs never overlap. */
  evalBatch(index: number, B: number, T: number): Int32Array {
    const count = this.evalBatchCount(B, T);
    safeInt(index, 'index', 0);
    if (index >= count) {
      throw new RangeError(`Eval batch ${index} is beyond the ${count} batches of B=${B}, T=${T} in split ${this.split} (${this.numTokens} tokens)`);
    }
    const out = new Int32Array(B * (T + 1));
    for (let b = 0; b < B; b++) this.read((index * B + b) * T, T + 1, out, b * (T + 1));
    return out;
  }

  /** Walks the split from its start: batches 0, 1, … up to maxBatches or the end of the split. Checks eagerly. */
  evalBatches(B: number, T: number, maxBatches = Infinity): IterableIterator<Int32Array> {
    const count = this.evalBatchCount(B, T, maxBatches);
    if (count === 0) {
      throw new RangeError(`Split ${this.split} of ${this.dir} has ${this.numTokens} tokens, fewer than one eval batch of B*T+1 = ${B * T + 1}`);
    }
    const self = this;
    return (function* () {
      for (let i = 0; i < count; i++) yield self.evalBatch(i, B, T);
    })();
  }
}

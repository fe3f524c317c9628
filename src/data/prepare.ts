// `covenant data prepare`: text files, directories or the built-in Brown corpus → token shards + manifest.
// Each document becomes [EOT, ...tokens] (as in llm.c); whole documents go to train or val by a hash of
// their id, so no val text is ever trained on and the split does not depend on the other inputs.
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { invalidParameter } from '../train/model-config';
import { brownFiles, untagBrown } from './brown';
import { encodeShard } from './shard';
import { Manifest, MANIFEST_FORMAT, MANIFEST_VERSION, ShardEntry, Split, writeManifest } from './manifest';
import { getTokenizer, Tokenizer } from './tokenizer';
import { writeFileAtomicSync } from '../train/atomic-write';

export const DEFAULT_SHARD_TOKENS = 10_000_000;
export const DEFAULT_VAL_FRACTION = 0.05;
/** The input name that selects the built-in Brown corpus. */
export const BROWN_INPUT = 'brown';

export interface PrepareOptions {
  /** File paths, directories (every regular file below, sorted, dot files skipped) or 'brown' (the built-in
   *  corpus; a local file of that name is './brown'). */
  inputs: string[];
  tokenizer: string;
  outDir: string;
  /** Tokens per shard file (the last shard of a split may hold fewer). Default 10M (20 MB). */
  shardTokens?: number;
  /** Expected fraction of documents in val, in [0, 1). Default 0.05. */
  valFraction?: number;
  log?: (line: string) => void;
}

/** A document, read only when it is tokenized. */
export interface DocumentSource {
  /** Stable across machines: 'brown/ca01', a file's base name, or DIRNAME/relative/path for a directory. */
  id: string;
  read(): string;
}

const SHARD_FILE = /^(train|val)_\d{6}\.bin$/;

function readText(file: string): string {
  const text = fs.readFileSync(file, 'utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function walk(dir: string, rel: string, out: string[]): void {
  const entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true });
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const relPath = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) walk(dir, relPath, out);
    else if (e.isFile() || (e.isSymbolicLink() && fs.statSync(path.join(dir, relPath)).isFile())) out.push(relPath);
  }
}

/** Every document the inputs name, in input order; a directory's files sorted by relative path. */
export function listDocuments(inputs: readonly string[]): DocumentSource[] {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new RangeError(invalidParameter('inputs', 'at least one input', inputs));
  const docs: DocumentSource[] = [];
  const seen = new Set<string>();
  inputs.forEach((input, i) => {
    if (typeof input !== 'string' || input === '') throw new TypeError(invalidParameter(`inputs[${i}]`, 'a path or "brown"', input));
    const key = input === BROWN_INPUT ? BROWN_INPUT : path.resolve(input);
    if (seen.has(key)) throw new RangeError(`inputs[${i}] ${JSON.stringify(input)} is given twice`);
    seen.add(key);
    if (input === BROWN_INPUT) {
      for (const file of brownFiles()) {
        docs.push({ id: `brown/${path.basename(file)}`, read: () => untagBrown(fs.readFileSync(file, 'utf8')) });
      }
      return;
    }
    let stat: fs.Stats;
    try {
      stat = fs.statSync(input);
    } catch {
      throw new RangeError(invalidParameter(`inputs[${i}]`, 'an existing file, a directory or "brown"', input));
    }
    if (stat.isDirectory()) {
      const files: string[] = [];
      walk(input, '', files);
      files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      if (files.length === 0) throw new RangeError(`inputs[${i}] ${JSON.stringify(input)} is a directory without files`);
      const base = path.basename(path.resolve(input));
      for (const rel of files) docs.push({ id: `${base}/${rel}`, read: () => readText(path.join(input, rel)) });
    } else if (stat.isFile()) {
      docs.push({ id: path.basename(input), read: () => readText(input) });
    } else {
      throw new RangeError(invalidParameter(`inputs[${i}]`, 'a regular file or a directory', input));
    }
  });
  return docs;
}

/** Where a document id falls in [0, 1): the first 48 bits of SHA-256(id). */
export function splitPoint(id: string): number {
  return createHash('sha256').update(id, 'utf8').digest().readUIntBE(0, 6) / 2 ** 48;
}

/**
 * Train or val for each document: val when splitPoint(id) < valFraction. With valFraction > 0 and at least
 * two documents, each split gets at least one document (the lowest point goes to val, the highest to train).
 */
export function assignSplits(ids: readonly string[], valFraction: number): Split[] {
  const points = ids.map(splitPoint);
  const splits: Split[] = points.map((p) => (p < valFraction ? 'val' : 'train'));
  if (valFraction > 0 && ids.length >= 2) {
    const order = points.map((p, i) => i).sort((a, b) => points[a] - points[b]);
    if (!splits.includes('val')) splits[order[0]] = 'val';
    if (!splits.includes('train')) splits[order[order.length - 1]] = 'train';
  }
  return splits;
}

/** Collects one split's token stream into fixed-size shards and writes each when it is full. */
class ShardWriter {
  private buf: Uint16Array;
  private used = 0;
  readonly entries: ShardEntry[] = [];
  total = 0;

  constructor(
    private readonly outDir: string,
    private readonly split: Split,
    private readonly shardTokens: number,
  ) {
    this.buf = new Uint16Array(Math.min(shardTokens, 1 << 20));
  }

  push(tokens: ArrayLike<number>): void {
    let i = 0;
    while (i < tokens.length) {
      if (this.used === this.buf.length) {
        if (this.buf.length < this.shardTokens) this.grow();
        else this.flush();
      }
      const n = Math.min(tokens.length - i, this.buf.length - this.used);
      for (let k = 0; k < n; k++) this.buf[this.used + k] = tokens[i + k];
      this.used += n;
      i += n;
    }
  }

  private grow(): void {
    const next = new Uint16Array(Math.min(this.shardTokens, this.buf.length * 2));
    next.set(this.buf.subarray(0, this.used));
    this.buf = next;
  }

  /** Writes what is buffered as the next shard (nothing when empty). */
  flush(): void {
    if (this.used === 0) return;
    const file = `${this.split}_${String(this.entries.length).padStart(6, '0')}.bin`;
    const bytes = encodeShard(this.buf.subarray(0, this.used));
    writeFileAtomicSync(path.join(this.outDir, file), bytes);
    this.entries.push({ file, split: this.split, tokens: this.used, sha256: createHash('sha256').update(bytes).digest('hex') });
    this.total += this.used;
    this.used = 0;
  }
}

function checkOptions(opts: PrepareOptions): { tokenizer: Tokenizer; shardTokens: number; valFraction: number } {
  if (typeof opts !== 'object' || opts === null) throw new TypeError(invalidParameter('options', 'an object', opts));
  const tokenizer = getTokenizer(opts.tokenizer);
  if (typeof opts.outDir !== 'string' || opts.outDir === '') throw new TypeError(invalidParameter('outDir', 'a directory path', opts.outDir));
  const shardTokens = opts.shardTokens ?? DEFAULT_SHARD_TOKENS;
  if (!Number.isSafeInteger(shardTokens) || shardTokens < 1 || shardTokens > 0x7fffffff) {
    throw new RangeError(invalidParameter('shardTokens', 'an integer in [1, 2^31-1]', shardTokens));
  }
  const valFraction = opts.valFraction ?? DEFAULT_VAL_FRACTION;
  if (typeof valFraction !== 'number' || !(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(invalidParameter('valFraction', 'a number in [0, 1)', valFraction));
  }
  return { tokenizer, shardTokens, valFraction };
}

/** Tokenizes the inputs into OUTDIR/{val,train}_NNNNNN.bin and OUTDIR/manifest.json; returns the manifest. */
export async function prepareData(opts: PrepareOptions): Promise<Manifest> {
  const { tokenizer, shardTokens, valFraction } = checkOptions(opts);
  const log = opts.log ?? (() => {});
  const docs = listDocuments(opts.inputs);
  const splits = assignSplits(
    docs.map((d) => d.id),
    valFraction,
  );
  fs.mkdirSync(opts.outDir, { recursive: true });

  const writers: Record<Split, ShardWriter> = {
    train: new ShardWriter(opts.outDir, 'train', shardTokens),
    val: new ShardWriter(opts.outDir, 'val', shardTokens),
  };
  const counts: Record<Split, number> = { train: 0, val: 0 };
  let skipped = 0;
  const eot = [tokenizer.eotToken];
  for (let i = 0; i < docs.length; i++) {
    const text = docs[i].read();
    if (text.trim() === '') {
      skipped++;
      continue;
    }
    const writer = writers[splits[i]];
    writer.push(eot);
    writer.push(tokenizer.encode(text));
    counts[splits[i]]++;
  }
  writers.val.flush();
  writers.train.flush();
  if (skipped) log(`skipped ${skipped} empty document(s)`);
  log(`documents: ${counts.train} train, ${counts.val} val; tokens: ${writers.train.total} train, ${writers.val.total} val`);
  if (valFraction > 0 && writers.val.total === 0) log('warning: the val split is empty (give more than one document)');

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    tokenizer: tokenizer.name,
    vocabSize: tokenizer.vocabSize,
    eotToken: tokenizer.eotToken,
    shards: [...writers.val.entries, ...writers.train.entries],
    createdAt: new Date().toISOString(),
  };
  writeManifest(opts.outDir, manifest);

  // Shards of an earlier, larger preparation in the same directory would only confuse people.
  const listed = new Set(manifest.shards.map((s) => s.file));
  for (const f of fs.readdirSync(opts.outDir)) {
    if (SHARD_FILE.test(f) && !listed.has(f)) fs.rmSync(path.join(opts.outDir, f), { force: true });
  }
  return manifest;
}

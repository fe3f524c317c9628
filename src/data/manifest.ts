// manifest.json of a prepared data directory: tokenizer, and each shard's split, token count and SHA-256.
// manifestHash() identifies the data set; the swarm compares it across members.
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { DataCorruptError } from '../errors';
import { invalidParameter } from '../train/model-config';
import { writeFileAtomicSync } from '../train/atomic-write';
import { getTokenizer, isTokenizerName, TOKENIZER_NAMES, TokenizerName } from './tokenizer';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'covenant-shards';
export const MANIFEST_VERSION = 1;

export type Split = 'train' | 'val';
export const SPLITS: readonly Split[] = ['train', 'val'];

export interface ShardEntry {
  /** File name inside the data directory (no directory part). */
  file: string;
  split: Split;
  tokens: number;
  /** SHA-256 (lowercase hex) of the whole shard file, header included. */
  sha256: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  tokenizer: TokenizerName;
  vocabSize: number;
  eotToken: number;
  /** In stream order: a split's token stream is its shards concatenated in this order. */
  shards: ShardEntry[];
  /** ISO-8601 time of preparation; not part of manifestHash. */
  createdAt: string;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

function object(raw: unknown, where: string): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TypeError(invalidParameter(where, 'an object', raw));
  return raw as Record<string, unknown>;
}

function onlyKeys(obj: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw new TypeError(`Unknown field ${where}.${k} (known: ${known.join(', ')})`);
  }
}

function integer(v: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const what = min === 0 ? 'a non-negative integer' : `an integer in [${min}, ${max}]`;
  if (typeof v !== 'number') throw new TypeError(invalidParameter(name, what, v));
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(invalidParameter(name, what, v));
  return v;
}

function string(v: unknown, name: string): string {
  if (typeof v !== 'string') throw new TypeError(invalidParameter(name, 'a string', v));
  return v;
}

function parseShard(raw: unknown, where: string): ShardEntry {
  const obj = object(raw, where);
  onlyKeys(obj, ['file', 'split', 'tokens', 'sha256'], where);
  const file = string(obj.file, `${where}.file`);
  // A shard lives in the data directory itself: a manifest from elsewhere must not point outside it.
  if (file === '' || file !== path.basename(file) || file === '.' || file === '..' || file.includes('\\') || file === MANIFEST_FILE) {
    throw new RangeError(invalidParameter(`${where}.file`, 'a plain file name inside the data directory', file));
  }
  const split = string(obj.split, `${where}.split`);
  if (!(SPLITS as readonly string[]).includes(split)) throw new RangeError(invalidParameter(`${where}.split`, 'train or val', split));
  const tokens = integer(obj.tokens, `${where}.tokens`, 0, 0x7fffffff);
  const sha256 = string(obj.sha256, `${where}.sha256`);
  if (!SHA256_RE.test(sha256)) throw new RangeError(invalidParameter(`${where}.sha256`, '64 lowercase hex digits', sha256));
  return { file, split: split as Split, tokens, sha256 };
}

/** Validates a parsed manifest.json; messages name the bad field. */
export function parseManifest(raw: unknown, where = 'manifest'): Manifest {
  const obj = object(raw, where);
  onlyKeys(obj, ['format', 'version', 'tokenizer', 'vocabSize', 'eotToken', 'shards', 'createdAt'], where);
  if (obj.format !== MANIFEST_FORMAT) throw new TypeError(invalidParameter(`${where}.format`, `"${MANIFEST_FORMAT}"`, obj.format));
  if (obj.version !== MANIFEST_VERSION) throw new RangeError(invalidParameter(`${where}.version`, `${MANIFEST_VERSION}`, obj.version));
  const tokenizer = string(obj.tokenizer, `${where}.tokenizer`);
  if (!isTokenizerName(tokenizer)) throw new RangeError(invalidParameter(`${where}.tokenizer`, `one of ${TOKENIZER_NAMES.join(', ')}`, tokenizer));
  const tk = getTokenizer(tokenizer);
  const vocabSize = integer(obj.vocabSize, `${where}.vocabSize`, 1, 65536);
  if (vocabSize !== tk.vocabSize) throw new RangeError(invalidParameter(`${where}.vocabSize`, `${tk.vocabSize} (the ${tokenizer} vocabulary)`, vocabSize));
  const eotToken = integer(obj.eotToken, `${where}.eotToken`, 0, vocabSize - 1);
  if (eotToken !== tk.eotToken) throw new RangeError(invalidParameter(`${where}.eotToken`, `${tk.eotToken} (the ${tokenizer} end-of-text id)`, eotToken));
  if (!Array.isArray(obj.shards)) throw new TypeError(invalidParameter(`${where}.shards`, 'an array', obj.shards));
  const shards = obj.shards.map((s, i) => parseShard(s, `${where}.shards[${i}]`));
  const seen = new Set<string>();
  shards.forEach((s, i) => {
    if (seen.has(s.file)) throw new RangeError(`${where}.shards[${i}].file ${JSON.stringify(s.file)} is listed twice`);
    seen.add(s.file);
  });
  const createdAt = string(obj.createdAt, `${where}.createdAt`);
  if (Number.isNaN(Date.parse(createdAt))) throw new RangeError(invalidParameter(`${where}.createdAt`, 'an ISO-8601 time', createdAt));
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, tokenizer, vocabSize, eotToken, shards, createdAt };
}

/** JSON with object keys sorted at every level and no whitespace. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * SHA-256 (hex) of the manifest's canonical JSON, createdAt left out: two preparations of the same inputs
 * with the same settings hash the same wherever and whenever they ran.
 */
export function manifestHash(manifest: Manifest): string {
  const { createdAt: _createdAt, ...content } = manifest;
  return createHash('sha256').update(canonicalJson(content)).digest('hex');
}

/** Reads and validates DIR/manifest.json. */
export function readManifest(dir: string): Manifest {
  const file = path.join(dir, MANIFEST_FILE);
  const hint = 'HINT: run `covenant data prepare --out DIR` to create it.';
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataCorruptError(`Cannot read data manifest ${file}: ${(e as Error).message}. ${hint}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DataCorruptError(`Data manifest ${file} is not valid JSON: ${(e as Error).message}. ${hint}`, { cause: e });
  }
  try {
    return parseManifest(raw);
  } catch (e) {
    throw new DataCorruptError(`Data manifest ${file} is invalid: ${(e as Error).message}. ${hint}`, { cause: e });
  }
}

/** Writes DIR/manifest.json atomically. */
export function writeManifest(dir: string, manifest: Manifest): void {
  const checked = parseManifest(manifest);
  writeFileAtomicSync(path.join(dir, MANIFEST_FILE), Buffer.from(`${JSON.stringify(checked, null, 2)}\n`));
}

/** Total tokens of one split. */
export function splitTokens(manifest: Manifest, split: Split): number {
  return manifest.shards.filter((s) => s.split === split).reduce((a, s) => a + s.tokens, 0);
}

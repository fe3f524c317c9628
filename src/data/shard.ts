// Token shards in the llm.c .bin layout: a header of 256 little-endian int32 ([0] magic 20240520,
// [1] version 1, [2] token count), then the tokens as little-endian uint16.
import * as fs from 'fs';
import * as os from 'os';
import { DataCorruptError } from '../errors';
import { writeFileAtomicSync } from '../train/atomic-write';

export const SHARD_MAGIC = 20240520;
export const SHARD_VERSION = 1;
export const SHARD_HEADER_INTS = 256;
export const SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4;

const HINT = 'HINT: re-run `covenant data prepare` to rebuild the shards.';

function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('covenant token shards need a little-endian machine');
}

/** The bytes of a shard file: header, then the tokens. */
export function encodeShard(tokens: Uint16Array): Buffer {
  if (!(tokens instanceof Uint16Array)) throw new TypeError('Expected a Uint16Array for tokens');
  if (tokens.length > 0x7fffffff) throw new RangeError(`Expected at most 2^31-1 tokens per shard but received ${tokens.length}`);
  assertLittleEndian();
  const buf = Buffer.alloc(SHARD_HEADER_BYTES + tokens.byteLength);
  buf.writeInt32LE(SHARD_MAGIC, 0);
  buf.writeInt32LE(SHARD_VERSION, 4);
  buf.writeInt32LE(tokens.length, 8);
  buf.set(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength), SHARD_HEADER_BYTES);
  return buf;
}

/** Checks a shard's bytes and returns its tokens (an aligned copy). `file` names the shard in errors. */
export function decodeShard(buf: Uint8Array, file: string): Uint16Array {
  assertLittleEndian();
  const fail = (what: string) => new DataCorruptError(`Token shard ${file} is invalid: ${what}. ${HINT}`);
  if (buf.byteLength < SHARD_HEADER_BYTES) {
    throw fail(`it has ${buf.byteLength} bytes, shorter than the ${SHARD_HEADER_BYTES}-byte header`);
  }
  const header = new DataView(buf.buffer, buf.byteOffset, SHARD_HEADER_BYTES);
  const magic = header.getInt32(0, true);
  const version = header.getInt32(4, true);
  const count = header.getInt32(8, true);
  if (magic !== SHARD_MAGIC) throw fail(`magic number is ${magic}, expected ${SHARD_MAGIC} (not an llm.c token shard)`);
  if (version !== SHARD_VERSION) throw fail(`version is ${version}, expected ${SHARD_VERSION}`);
  if (count < 0) throw fail(`token count in the header is negative (${count})`);
  const expected = SHARD_HEADER_BYTES + 2 * count;
  if (buf.byteLength !== expected) {
    throw fail(`header says ${count} tokens (${expected} bytes) but the file has ${buf.byteLength} bytes`);
  }
  const tokens = new Uint16Array(count);
  new Uint8Array(tokens.buffer).set(buf.subarray(SHARD_HEADER_BYTES, expected));
  return tokens;
}

/** Writes a shard atomically (temp file, fsync, rename). */
export function writeShard(file: string, tokens: Uint16Array): void {
  writeFileAtomicSync(file, encodeShard(tokens));
}

/** Reads and checks a shard (magic, version, size against the file length). */
export function readShard(file: string): Uint16Array {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new DataCorruptError(`Cannot read token shard ${file}: ${(e as Error).message}. ${HINT}`, { cause: e });
  }
  return decodeShard(buf, file);
}

// A member's compressed pseudo-gradient as the blocks it commits to: block i is the fp32 scale of block i
// (4 bytes, little endian) followed by its int8 codes. The root of the Merkle tree over them, with the Δ's
// L2 norm, is the member's commitment; the same bytes (scales then codes) are what it uploads when the
// validator asks for its whole Δ.
import * as crypto from 'crypto';
import { leafHash, merkleLevels } from './merkle';

export interface CompressedDelta {
  codes: Int8Array;
  scales: Float32Array;
  block: number;
}

/** Bytes of block i: its scale (fp32 LE) then its codes. */
export function deltaBlock(d: CompressedDelta, i: number): Buffer {
  const start = i * d.block;
  const end = Math.min(d.codes.length, start + d.block);
  const out = Buffer.alloc(4 + (end - start));
  out.writeFloatLE(d.scales[i], 0);
  Buffer.from(d.codes.buffer, d.codes.byteOffset + start, end - start).copy(out, 4);
  return out;
}

export function deltaLevels(d: CompressedDelta): Buffer[][] {
  const leaves: Buffer[] = [];
  for (let i = 0; i < d.scales.length; i++) leaves.push(leafHash(deltaBlock(d, i)));
  return merkleLevels(leaves);
}

export function deltaRoot(d: CompressedDelta): string {
  const levels = deltaLevels(d);
  return levels[levels.length - 1][0].toString('hex');
}

/** L2 norm of the dequantized Δ (code × scale), summed in fp64 in index order. */
export function deltaNorm(d: CompressedDelta): number {
  let s = 0;
  for (let i = 0; i < d.codes.length; i++) {
    const v = d.codes[i] * d.scales[Math.floor(i / d.block)];
    s += v * v;
  }
  return Math.sqrt(s);
}

/** The upload payload: every scale (fp32 LE), then every code. */
export function encodeDelta(d: CompressedDelta): Buffer {
  const out = Buffer.alloc(4 * d.scales.length + d.codes.length);
  Buffer.from(d.scales.buffer, d.scales.byteOffset, d.scales.byteLength).copy(out, 0);
  Buffer.from(d.codes.buffer, d.codes.byteOffset, d.codes.byteLength).copy(out, 4 * d.scales.length);
  return out;
}

/** Parses an upload of `n` elements in blocks of `block`; throws RangeError on a wrong length or a bad scale. */
export function decodeDelta(payload: Uint8Array, n: number, block: number): CompressedDelta {
  const blocks = Math.ceil(n / block);
  if (payload.length !== 4 * blocks + n) throw new RangeError(`a Δ of ${n} elements in blocks of ${block} is ${4 * blocks + n} bytes, not ${payload.length}`);
  const scales = new Float32Array(blocks);
  Buffer.from(scales.buffer).set(payload.subarray(0, 4 * blocks));
  for (let i = 0; i < blocks; i++) if (!(Number.isFinite(scales[i]) && scales[i] >= 0)) throw new RangeError(`scale ${i} of the Δ is ${scales[i]}, not a finite non-negative number`);
  const codes = new Int8Array(n);
  Buffer.from(codes.buffer).set(payload.subarray(4 * blocks));
  return { codes, scales, block };
}

export function sha256Hex(b: Uint8Array): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

// Norm bounds that a compressed Δ's scales prove, and the clip they drive. With absmax int8 every value of
// block b lies within ±127·s_b, so the Δ's L2 norm is at most
//   U = sqrt(Σ_b len_b · (127 s_b)²)
// whatever its codes are; and an absmax-quantized nonzero block holds a code ±127, so the norm is at least
//   L = sqrt(Σ_b (127 s_b)²).
// A member sends its scales in full and commits to their SHA-256 and to U before the ring: U must be what
// they give, and its claimed exact norm must lie between L and U. The coordinator sets the round's clip bound
// to clipFactor × the median U; each member then feeds factor × its dequantized Δ into the ring,
// factor = min(1, bound / U), so no contribution can exceed the bound, whatever its codes. Both bounds are
// computed here, in fp64 in block order, so the member and the validator agree bit for bit.
import * as crypto from 'crypto';

/** U: the largest L2 norm a Δ with these scales can have (n elements in blocks of `block`). */
export function scaleNormBound(scales: Float32Array, n: number, block: number): number {
  let s = 0;
  for (let b = 0; b < scales.length; b++) {
    const len = Math.min(block, n - b * block);
    const m = 127 * scales[b];
    s += len * m * m;
  }
  return Math.sqrt(s);
}

/** L: the smallest L2 norm an absmax-quantized Δ with these scales has. */
export function scaleNormFloor(scales: Float32Array): number {
  let s = 0;
  for (let b = 0; b < scales.length; b++) {
    const m = 127 * scales[b];
    s += m * m;
  }
  return Math.sqrt(s);
}

export function scalesSha256(scales: Float32Array): string {
  return crypto.createHash('sha256').update(Buffer.from(scales.buffer, scales.byteOffset, scales.byteLength)).digest('hex');
}

/** The factor a member with bound U applies under the round's clip (0: no clip). */
export function clipFactor(scaleNorm: number, clipNorm: number): number {
  return clipNorm > 0 && scaleNorm > clipNorm ? clipNorm / scaleNorm : 1;
}

/** x × factor in place, each product rounded to fp32 (the same bits on the member and the validator). */
export function applyClip(x: Float32Array, factor: number): Float32Array {
  if (factor !== 1) for (let i = 0; i < x.length; i++) x[i] = x[i] * factor;
  return x;
}

/** Checks a member's opened scales against its commitment; returns why they fail, or undefined. */
export function checkScales(
  c: { scalesSha256: string; scaleNorm: number; deltaNorm: number },
  scales: Float32Array,
  n: number,
  block: number,
): string | undefined {
  if (scales.length !== Math.ceil(n / block)) return `opened ${scales.length} scales, not ${Math.ceil(n / block)}`;
  if (scalesSha256(scales) !== c.scalesSha256) return 'its opened scales are not the ones it committed to';
  for (let b = 0; b < scales.length; b++) if (!(Number.isFinite(scales[b]) && scales[b] >= 0)) return `scale ${b} is ${scales[b]}`;
  const u = scaleNormBound(scales, n, block);
  if (u !== c.scaleNorm) return `committed the bound ${c.scaleNorm.toPrecision(6)} where its scales give ${u.toPrecision(6)}`;
  const floor = scaleNormFloor(scales);
  if (c.deltaNorm < floor * (1 - 1e-9)) return `committed the norm ${c.deltaNorm.toPrecision(6)}, below the ${floor.toPrecision(6)} its scales prove`;
  return undefined;
}

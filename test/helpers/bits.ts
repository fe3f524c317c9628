// Bit-for-bit comparison of typed arrays (NaN payloads and the sign of zero count), with the first mismatch.

/** Index of the first element whose bytes differ, the shorter length if one is a prefix of the other, or -1. */
export function firstBitDiff(a: Int8Array | Float32Array, b: Int8Array | Float32Array): number {
  if (a.BYTES_PER_ELEMENT !== b.BYTES_PER_ELEMENT) throw new TypeError('firstBitDiff: arrays of different element types');
  const size = a.BYTES_PER_ELEMENT;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return Math.floor(i / size);
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

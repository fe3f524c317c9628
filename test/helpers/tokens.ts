// Deterministic token batches for engine tests: B×(T+1) ids in [0, V) from a 32-bit LCG seeded with `seed`.
export function lcgTokens(B: number, T: number, seed: number, V: number): Int32Array {
  const t = new Int32Array(B * (T + 1));
  let x = seed >>> 0;
  for (let i = 0; i < t.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    t[i] = x % V;
  }
  return t;
}

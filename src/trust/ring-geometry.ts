// Where a block travels in the int8 ring (native/comm/ring_plan.cpp): the tensor's blocks are cut into N
// chunks; chunk c starts at rank c, is summed rank after rank to its owner c − 1 in the reduce-scatter
// (steps 0..N−2), and the owner's final value is forwarded around the ring in the all-gather (steps
// N−1..2N−3). A rank's sent transcript holds one leaf per block per step, in step order, blocks ascending.

function mod(a: number, N: number): number {
  return ((a % N) + N) % N;
}

/** Blocks [b0, b1) of chunk c. */
export function chunkBlocks(numBlocks: number, N: number, c: number): [number, number] {
  return [Math.floor((numBlocks * c) / N), Math.floor((numBlocks * (c + 1)) / N)];
}

/** The chunk of `block` when `numBlocks` blocks are split over `N` ranks. */
export function chunkOf(block: number, numBlocks: number, N: number): number {
  for (let c = 0; c < N; c++) if (block < chunkBlocks(numBlocks, N, c)[1]) return c;
  return N - 1;
}

/** The chunk rank `rank` sends at step g. */
export function sendChunk(N: number, rank: number, g: number): number {
  return g < N - 1 ? mod(rank - g, N) : mod(rank + 1 - (g - (N - 1)), N);
}

/** The steps at which `rank` sends chunk c: its reduce-scatter step (none for the owner) and its all-gather step (none for the owner's predecessor). */
export function sendSteps(N: number, rank: number, c: number): number[] {
  const out: number[] = [];
  const g = mod(rank - c, N);
  if (g <= N - 2) out.push(g);
  const s = mod(rank + 1 - c, N);
  if (s <= N - 2) out.push(N - 1 + s);
  return out;
}

/** Leaves in rank `rank`'s sent transcript. */
export function sentLeafCount(numBlocks: number, N: number, rank: number): number {
  let k = 0;
  for (let g = 0; g < 2 * (N - 1); g++) {
    const [b0, b1] = chunkBlocks(numBlocks, N, sendChunk(N, rank, g));
    k += b1 - b0;
  }
  return k;
}

/** The index of (step, block) among rank `rank`'s sent leaves; the block must be in the chunk sent at that step. */
export function sentLeafIndex(numBlocks: number, N: number, rank: number, step: number, block: number): number {
  let k = 0;
  for (let g = 0; g < step; g++) {
    const [b0, b1] = chunkBlocks(numBlocks, N, sendChunk(N, rank, g));
    k += b1 - b0;
  }
  const [b0, b1] = chunkBlocks(numBlocks, N, sendChunk(N, rank, step));
  if (block < b0 || block >= b1) throw new RangeError(`block ${block} is not sent by rank ${rank} at step ${step}`);
  return k + block - b0;
}

/** The data of a transcript leaf: u32 step, u32 block (LE), then the block's bytes (fp32 scale, codes). */
export function ringLeafData(step: number, block: number, blockBytes: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + blockBytes.length);
  out.writeUInt32LE(step, 0);
  out.writeUInt32LE(block, 4);
  out.set(blockBytes, 8);
  return out;
}

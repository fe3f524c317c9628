// A member's openings of its ring traffic: for each asked block, what it sent at every step that carried
// the block, with the Merkle path in the sent transcript whose root it signed in its round report.
import type { AllReduceTranscript } from '../native';
import type { RingOpening } from '../swarm/proto';
import { merkleLevels, merklePath } from './merkle';
import { chunkOf, sendSteps, sentLeafIndex } from './ring-geometry';

function blockBytes(codes: Int8Array, scales: Float32Array, block: number, blockSize: number): Buffer {
  const start = block * blockSize;
  const end = Math.min(codes.length, start + blockSize);
  const out = Buffer.alloc(4 + end - start);
  out.writeFloatLE(scales[block], 0);
  Buffer.from(codes.buffer, codes.byteOffset + start, end - start).copy(out, 4);
  return out;
}

/** The ring openings of `blocks` from an int8 all-reduce's transcript (rank `rank` of `N`). */
export function ringOpenings(t: AllReduceTranscript, N: number, rank: number, blockSize: number, blocks: readonly number[]): RingOpening[] {
  if (!t.scatterCodes || !t.scatterScales || !t.finalCodes || !t.finalScales) throw new Error('the transcript holds no int8 traffic');
  const numBlocks = t.finalScales.length;
  const leaves: Buffer[] = [];
  for (let i = 0; i < t.sentLeaves.length; i += 32) leaves.push(t.sentLeaves.subarray(i, i + 32));
  const levels = merkleLevels(leaves);
  const out: RingOpening[] = [];
  for (const index of blocks) {
    if (!Number.isInteger(index) || index < 0 || index >= numBlocks) continue;
    for (const step of sendSteps(N, rank, chunkOf(index, numBlocks, N))) {
      const block = step < N - 1 ? blockBytes(t.scatterCodes, t.scatterScales, index, blockSize) : blockBytes(t.finalCodes, t.finalScales, index, blockSize);
      out.push({ step, index, block, path: merklePath(levels, sentLeafIndex(numBlocks, N, rank, step, index)) });
    }
  }
  return out;
}

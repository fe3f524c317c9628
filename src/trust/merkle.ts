// A Merkle tree over the blocks of a member's compressed pseudo-gradient, so that it can commit to its Δ
// before the all-reduce and later open single blocks (block + path) or the whole Δ against the root.
// Leaves: SHA-256(0x00 || block bytes); inner nodes: SHA-256(0x01 || left || right); a node without a
// sibling moves up unchanged. The domain bytes keep a leaf from passing as an inner node.
import * as crypto from 'crypto';

const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

export function leafHash(block: Uint8Array): Buffer {
  return crypto.createHash('sha256').update(LEAF).update(block).digest();
}

function nodeHash(left: Buffer, right: Buffer): Buffer {
  return crypto.createHash('sha256').update(NODE).update(left).update(right).digest();
}

/** Every level of the tree, leaves first; the last level is [root]. An empty tree has the root SHA-256(0x00). */
export function merkleLevels(leaves: readonly Buffer[]): Buffer[][] {
  const levels: Buffer[][] = [leaves.length ? [...leaves] : [leafHash(new Uint8Array(0))]];
  while (levels[levels.length - 1].length > 1) {
    const cur = levels[levels.length - 1];
    const next: Buffer[] = [];
    for (let i = 0; i < cur.length; i += 2) next.push(i + 1 < cur.length ? nodeHash(cur[i], cur[i + 1]) : cur[i]);
    levels.push(next);
  }
  return levels;
}

export function merkleRoot(leaves: readonly Buffer[]): string {
  const levels = merkleLevels(leaves);
  return levels[levels.length - 1][0].toString('hex');
}

/** The sibling hashes from leaf `index` up to the root (a missing sibling is skipped). */
export function merklePath(levels: Buffer[][], index: number): Buffer[] {
  const path: Buffer[] = [];
  let i = index;
  for (let l = 0; l < levels.length - 1; l++) {
    const sib = i ^ 1;
    if (sib < levels[l].length) path.push(levels[l][sib]);
    i >>= 1;
  }
  return path;
}

/** Whether `block` is leaf `index` of `count` leaves under `rootHex`, by `path`. */
export function verifyMerklePath(rootHex: string, block: Uint8Array, index: number, count: number, path: readonly Buffer[]): boolean {
  if (!Number.isInteger(index) || index < 0 || index >= count) return false;
  let h = leafHash(block);
  let i = index;
  let width = count;
  let p = 0;
  while (width > 1) {
    const sib = i ^ 1;
    if (sib < width) {
      if (p >= path.length) return false;
      h = i & 1 ? nodeHash(path[p], h) : nodeHash(h, path[p]);
      p++;
    }
    i >>= 1;
    width = Math.ceil(width / 2);
  }
  return p === path.length && h.toString('hex') === rootHex;
}

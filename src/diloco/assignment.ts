// Which data a member trains on in a round: a pure function of (run seed, round, peer id), so anyone can
// recompute a member's windows and a ledger can record a digest of them.
import { createHash } from 'crypto';
import { DataLoader, windowStart } from '../data/loader';
import { invalidParameter } from '../train/model-config';

function nonNegativeInt(name: string, v: unknown, min = 0): number {
  if (typeof v !== 'number') throw new TypeError(invalidParameter(name, 'an integer', v));
  if (!Number.isSafeInteger(v) || v < min) {
    throw new RangeError(invalidParameter(name, min === 0 ? 'a non-negative safe integer' : 'a positive safe integer', v));
  }
  return v;
}

function checkPeerId(peerId: unknown): string {
  if (typeof peerId !== 'string') throw new TypeError(invalidParameter('peerId', 'a non-empty string', peerId));
  if (peerId === '') throw new RangeError(invalidParameter('peerId', 'a non-empty string', peerId));
  return peerId;
}

/** Data-loader seed of `peerId` in `round`: the first 6 bytes (big endian) of SHA-256(`covenant-windows|seed|round|peer`). */
export function windowSeed(runSeed: number, round: number, peerId: string): number {
  nonNegativeInt('runSeed', runSeed);
  nonNegativeInt('round', round);
  checkPeerId(peerId);
  return createHash('sha256').update(`covenant-windows|${runSeed}|${round}|${peerId}`, 'utf8').digest().readUIntBE(0, 6);
}

/** How many window starts DataLoader.batch draws from for sequence length T (numTokens − T). */
export function loaderNumStarts(loader: DataLoader, T: number): number {
  nonNegativeInt('T', T, 1);
  if (T + 1 > loader.numTokens) throw new RangeError(`The split holds ${loader.numTokens} tokens, too few for a window of T+1 = ${T + 1}`);
  return loader.numTokens - T;
}

/**
 * The stretch of the split a member's windows come from in a round: the whole split when shardsPerRound is 0;
 * otherwise shardsPerRound consecutive train shards, the first chosen by the window seed, so a member needs
 * (and fetches) only those shards that round.
 */
export function assignedRegion(loader: DataLoader, runSeed: number, round: number, peerId: string, shardsPerRound = 0): { start: number; length: number } {
  const shards = loader.shardRanges();
  if (shardsPerRound <= 0 || shardsPerRound >= shards.length) return { start: 0, length: loader.numTokens };
  const first = windowSeed(runSeed, round, peerId) % (shards.length - shardsPerRound + 1);
  const last = shards[first + shardsPerRound - 1];
  return { start: shards[first].start, length: last.start + last.tokens - shards[first].start };
}

/** Stream starts of the B windows of inner step `innerStep` that the round assigns to `peerId`. */
export function assignedStarts(loader: DataLoader, runSeed: number, round: number, peerId: string, innerStep: number, B: number, T: number, shardsPerRound = 0): number[] {
  const region = assignedRegion(loader, runSeed, round, peerId, shardsPerRound);
  if (region.length < T + 1) return assignedStarts(loader, runSeed, round, peerId, innerStep, B, T, 0); // shards shorter than a window
  const seed = windowSeed(runSeed, round, peerId);
  return Array.from({ length: B }, (_, b) => region.start + windowStart(seed, innerStep, b, region.length - T));
}

/** The (B, T+1) training batch of inner step `innerStep` that the round assigns to `peerId`. */
export function assignedBatch(loader: DataLoader, runSeed: number, round: number, peerId: string, innerStep: number, B: number, T: number, shardsPerRound = 0): Int32Array {
  if (shardsPerRound <= 0) return loader.batch(innerStep, B, T, windowSeed(runSeed, round, peerId));
  const out = new Int32Array(B * (T + 1));
  assignedStarts(loader, runSeed, round, peerId, innerStep, B, T, shardsPerRound).forEach((start, b) => loader.read(start, T + 1, out, b * (T + 1)));
  return out;
}

/**
 * SHA-256 hex over the window starts of a member's round, step-major then row, each a little-endian u64.
 * Pass numStarts = loaderNumStarts(loader, T) to cover the windows assignedBatch reads.
 */
export function assignmentDigest(runSeed: number, round: number, peerId: string, innerSteps: number, B: number, T: number, numStarts: number): string {
  nonNegativeInt('innerSteps', innerSteps);
  nonNegativeInt('B', B, 1);
  nonNegativeInt('T', T, 1);
  nonNegativeInt('numStarts', numStarts, 1);
  const seed = windowSeed(runSeed, round, peerId);
  const hash = createHash('sha256');
  const word = Buffer.alloc(8);
  for (let step = 0; step < innerSteps; step++) {
    for (let row = 0; row < B; row++) {
      word.writeBigUInt64LE(BigInt(windowStart(seed, step, row, numStarts)));
      hash.update(word);
    }
  }
  return hash.digest('hex');
}

/**
 * A digest naming a member's data of a round without the data: the manifest, the window seed and the batch
 * shape fix every window (assignedBatch), so anyone holding the data set can expand it. Kept in the ledger.
 */
export function assignmentId(manifestSha256: string, runSeed: number, round: number, peerId: string, innerSteps: number, B: number, T: number, shardsPerRound = 0): string {
  const seed = windowSeed(runSeed, round, peerId);
  return createHash('sha256').update(`covenant-assignment|${manifestSha256}|${seed}|${innerSteps}|${B}|${T}|${shardsPerRound}`).digest('hex');
}

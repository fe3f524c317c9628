// Naming the member whose ring traffic departs from its commitment. For one block of chunk c, the ring's
// int8 arithmetic is known step by step: rank c sends q(x_c); each next rank k sends q(dq(what it received)
// + x_k); the owner (c − 1) sends q((dq(received) + x_owner) / N); every other rank forwards what it received.
// Each member's sent bytes are opened against the transcript root it signed, and on a hop whose two roots
// agree they are also what its successor received. So each rank is judged on its own step: given what it
// provably received and what it committed to, did it send what the arithmetic gives? A hop whose roots
// disagree leaves its receiver's input unproven; that rank is not judged (the transcript check strikes
// both ends of such a hop).
import { dequantize, quantize } from '../native';

export interface BlameInput {
  N: number;
  /** The block's chunk. */
  chunk: number;
  blockSize: number;
  /** x_r: rank r's committed values of the block (dequantized, scaled as the round's clip says). */
  inputs: Float32Array[];
  /** What rank r sent at step g (fp32 scale LE then codes), opened against its root; undefined if not opened. */
  sent: (rank: number, step: number) => Buffer | undefined;
  /** Whether hop r → r+1 has matching transcript roots. */
  hopOk: (rank: number) => boolean;
}

export interface Blame {
  rank: number;
  step: number;
  reason: string;
}

function encode(codes: Int8Array, scales: Float32Array): Buffer {
  const out = Buffer.alloc(4 + codes.length);
  out.writeFloatLE(scales[0], 0);
  Buffer.from(codes.buffer, codes.byteOffset, codes.byteLength).copy(out, 4);
  return out;
}

/** The values of a block's bytes (fp32 scale LE, then codes). */
export async function decodeBlock(b: Buffer, blockSize: number): Promise<Float32Array> {
  const codes = Int8Array.from(new Int8Array(b.buffer, b.byteOffset + 4, b.length - 4));
  return dequantize(codes, new Float32Array([b.readFloatLE(0)]), blockSize);
}

/** A block's values quantized, as the ring sends them. */
export async function quantizeBlock(w: Float32Array, blockSize: number): Promise<Buffer> {
  const q = await quantize(w, blockSize);
  return encode(q.codes, q.scales);
}

/**
 * One reduce-scatter hop as native/comm/ring_allreduce.cpp computes it: dequantize what was received, add the
 * rank's own values in fp32 (Float32Array stores round each sum), divide by `divisor` (N at the owner, else 1),
 * quantize.
 */
export async function ringHop(received: Buffer, own: Float32Array, divisor: number, blockSize: number): Promise<Buffer> {
  const w = await decodeBlock(received, blockSize);
  for (let i = 0; i < w.length; i++) w[i] = w[i] + own[i];
  if (divisor !== 1) for (let i = 0; i < w.length; i++) w[i] = w[i] / divisor;
  return quantizeBlock(w, blockSize);
}

/** The ranks (at most one per block: the first deviation) whose sent bytes do not follow from their inputs. */
export async function blameBlock(a: BlameInput): Promise<Blame[]> {
  const { N, chunk: c, blockSize, inputs } = a;
  if (N < 2) return [];
  const owner = (c + N - 1) % N;
  let prev: Buffer | undefined;
  // Reduce-scatter: step j is sent by rank c + j.
  for (let j = 0; j <= N - 1; j++) {
    const k = (c + j) % N;
    const step = j < N - 1 ? j : N - 1; // the owner's result leaves it at all-gather step 0
    const actual = a.sent(k, step);
    if (!actual) return [{ rank: k, step, reason: 'did not open the block it sent' }];
    if (j === 0 || a.hopOk((k + N - 1) % N)) {
      const expected = j === 0 ? await quantizeBlock(inputs[k], blockSize) : await ringHop(prev!, inputs[k], k === owner ? N : 1, blockSize);
      if (!expected.equals(actual)) {
        const what = j === 0 ? 'its own committed values' : k === owner ? 'the mean of what it received and its commitment' : 'what it received plus its commitment';
        return [{ rank: k, step, reason: `sent bytes that are not ${what}, quantized` }];
      }
    }
    prev = actual;
  }
  // All-gather: everyone after the owner forwards what it received.
  for (let s = 1; s <= N - 2; s++) {
    const k = (owner + s) % N;
    const step = N - 1 + s;
    const actual = a.sent(k, step);
    if (!actual) return [{ rank: k, step, reason: 'did not open the block it forwarded' }];
    if (a.hopOk((k + N - 1) % N) && !actual.equals(prev!)) return [{ rank: k, step, reason: 'forwarded bytes other than the ones it received' }];
    prev = actual;
  }
  return [];
}

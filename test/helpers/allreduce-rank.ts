// One rank of a multi-process all-reduce test: builds its seeded random tensor, runs the attempts it is
// given in turn until one succeeds, and prints one JSON line per attempt. Usage: node allreduce-rank.js JSON
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { allReduce, CommError } from '../../src/native';
import { merkleRoot } from '../../src/trust/merkle';

interface Attempt {
  rank: number;
  peers: string[];
  attempt: number;
  /** Overrides RankArgs.timeoutMs for this attempt. */
  timeoutMs?: number;
}

interface RankArgs {
  n: number;
  seed: number;
  mode: 'fp32' | 'int8';
  round: number;
  timeoutMs: number;
  secret: string;
  attempts: Attempt[];
  startDelayMs?: number;
  outFile?: string;
}

/** The same values the test computes for this seed (a small LCG feeding Box-Muller). */
export function rankTensor(n: number, seed: number): Float32Array {
  const t = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next()));
    const a = 2 * Math.PI * next();
    t[i] = r * Math.cos(a);
    if (i + 1 < n) t[i + 1] = r * Math.sin(a);
  }
  return t;
}

function leavesOf(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += 32) out.push(b.subarray(i, i + 32));
  return out;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as RankArgs;
  const tensor = rankTensor(args.n, args.seed);
  if (args.startDelayMs) await new Promise((r) => setTimeout(r, args.startDelayMs));
  for (const a of args.attempts) {
    const started = Date.now();
    process.stdout.write(`${JSON.stringify({ event: 'start', attempt: a.attempt, time: started })}\n`);
    try {
      const r = await allReduce({ rank: a.rank, peers: a.peers, tensor, mode: args.mode, timeoutMs: a.timeoutMs ?? args.timeoutMs, collectiveId: { round: args.round, attempt: a.attempt }, secret: args.secret, transcripts: true });
      const sha = createHash('sha256').update(Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)).digest('hex');
      if (args.outFile) fs.writeFileSync(args.outFile, Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength));
      const { transcript, ...stats } = r;
      // The Merkle roots rebuilt in JavaScript from the native leaves (src/trust/merkle.ts) must be the native roots.
      const rebuilt = transcript && { sent: merkleRoot(leavesOf(transcript.sentLeaves)), received: merkleRoot(leavesOf(transcript.receivedLeaves)) };
      process.stdout.write(`${JSON.stringify({ event: 'done', attempt: a.attempt, ok: true, sha, ...stats, rebuilt, time: Date.now() })}\n`);
      return;
    } catch (e) {
      const err = e as CommError;
      const sha = createHash('sha256').update(Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)).digest('hex');
      process.stdout.write(`${JSON.stringify({ event: 'done', attempt: a.attempt, ok: false, code: err.code, peerRank: err.peerRank, phase: err.phase, message: err.message, sha, time: Date.now() })}\n`);
    }
  }
  process.exitCode = 1;
}

if (require.main === module) void main();

// One rank of the all-reduce bench (bench/allreduce.ts starts one process per rank, under `ip netns exec`
// on the shaped links). Usage: node --expose-gc allreduce-rank.js '{"rank":0,"peers":[...],"secret":"..."}'
//
// It takes one command per line on stdin and answers each with one JSON line on stdout, so the bench acts
// as a barrier: it sends `run` to every rank at once and waits for all answers before the next collective.
//   {"op":"alloc","n":N}                      fills this rank's tensor; answers {"event":"ready","n":N}
//   {"op":"run","mode":"fp32"|"int8","blockSize":128,"round":R,"attempt":A,"check":bool}
//       runs one allReduce; answers {"event":"done", seconds, bytesSent, bytesReceived, wall_seconds, cpu_seconds,
//       and with check: sha256 of the result and the largest error against the known mean over sampled elements}
//   {"op":"exit"}
// A failed collective answers {"event":"error", code, message, peerRank, phase}.
import { createHash } from 'node:crypto';
import readline from 'node:readline';

import { allReduce, CommError } from '../src/native';

interface RankArgs {
  rank: number;
  /** Every rank's 'host:port' in ring order. */
  peers: string[];
  secret: string;
  timeoutMs?: number;
}

interface AllocCmd {
  op: 'alloc';
  n: number;
}
interface RunCmd {
  op: 'run';
  mode: 'fp32' | 'int8';
  blockSize: number;
  round: number;
  attempt: number;
  check?: boolean;
}
type Cmd = AllocCmd | RunCmd | { op: 'exit' };

// Element i of rank r is u(i) + (r − (N−1)/2)·w(i), with u and w in [−1, 1) from an integer hash of i: the
// mean over ranks is u(i) exactly (in real arithmetic), whatever N, so a rank can check its result.
function hash01(i: number, salt: number): number {
  let h = Math.imul(i ^ salt, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca77);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae3d);
  h ^= h >>> 16;
  return (h >>> 0) / 2147483648 - 1;
}
const u = (i: number) => hash01(i, 0x1234567);
const w = (i: number) => hash01(i, 0x7654321);

function fill(n: number, rank: number, N: number): Float32Array {
  const t = new Float32Array(n);
  const d = rank - (N - 1) / 2;
  for (let i = 0; i < n; i++) t[i] = u(i) + d * w(i);
  return t;
}

/** The largest |t[i] − mean(i)| over about 65536 elements spread over the tensor. */
function sampledError(t: Float32Array): number {
  const step = Math.max(1, Math.floor(t.length / 65536));
  let worst = 0;
  for (let i = 0; i < t.length; i += step) worst = Math.max(worst, Math.abs(t[i] - u(i)));
  return worst;
}

function say(x: object): void {
  process.stdout.write(`${JSON.stringify(x)}\n`);
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as RankArgs;
  const N = args.peers.length;
  let tensor: Float32Array | undefined;
  const gc = (globalThis as { gc?: () => void }).gc;
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line) as Cmd;
    if (cmd.op === 'exit') break;
    if (cmd.op === 'alloc') {
      tensor = undefined;
      gc?.();
      tensor = fill(cmd.n, args.rank, N);
      say({ event: 'ready', n: cmd.n });
      continue;
    }
    if (!tensor) throw new Error('run before alloc');
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();  // every thread of the process: the collective's native threads too
    try {
      const r = await allReduce({
        rank: args.rank, peers: args.peers, tensor, mode: cmd.mode, blockSize: cmd.blockSize,
        timeoutMs: args.timeoutMs ?? 60000, collectiveId: { round: cmd.round, attempt: cmd.attempt }, secret: args.secret,
      });
      const wall = (performance.now() - t0) / 1e3;
      const cpu = process.cpuUsage(cpu0);
      const out: Record<string, unknown> = { event: 'done', ...r, wall_seconds: wall, cpu_seconds: (cpu.user + cpu.system) / 1e6 };
      if (cmd.check) {
        out.sha256 = createHash('sha256').update(Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)).digest('hex');
        // The bench checks the warm-up collective, the first one on this rank's own values.
        out.max_err = sampledError(tensor);
      }
      say(out);
    } catch (e) {
      const err = e as CommError;
      say({ event: 'error', code: err.code, message: err.message, peerRank: err.peerRank, phase: err.phase });
    }
  }
  rl.close();
}

main().catch((e: unknown) => {
  process.stderr.write(`allreduce-rank: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});

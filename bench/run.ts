// Benchmarks: `npm run bench -- [gemm|attention|train|quant|allreduce|convergence|trust|all ...] [--threads N] [--quick]`:
// arguments and dispatch.
// Each NAME writes bench/out/NAME.json = { machine, rows } (DESIGN.md, "Tests and benches") and prints a
// table. GEMM and attention run in the native bench executable (native-bench.ts); train runs the Node
// engine, beside the PyTorch peer (torch-peer.ts) when /usr/bin/python3 has torch; allreduce runs one node
// process per rank (allreduce-rank.ts), beside torch's gloo, on loopback and on shaped links in network
// namespaces (netns.ts). Every bench measures its limit (the fp32 FMA peak at the same thread count; for
// allreduce, TCP bandwidth) and puts it in its rows as impl 'limit'. convergence trains a swarm of worker
// processes against a single worker (convergence.ts); it is a training run of several minutes, so `all`
// leaves it out: name it. trust (trust.ts) measures what verification costs per round and runs swarms with
// one hostile member; it is a training run too, left out of `all` likewise.
import { invalidParameter } from '../src/train/model-config';
import { benchAllreduce } from './allreduce';
import { benchAttention } from './attention';
import { benchConvergence } from './convergence';
import { benchGemm } from './gemm';
import { nativeBin } from './native-bench';
import { BenchOptions } from './options';
import { benchQuant } from './quant';
import { benchTrain } from './train';
import { benchTrust } from './trust';

/** Each bench by name, in the order they run (`all`: see ALL). */
const BENCHES = {
  gemm: benchGemm,
  attention: benchAttention,
  train: benchTrain,
  quant: benchQuant,
  allreduce: benchAllreduce,
  convergence: benchConvergence,
  trust: benchTrust,
} satisfies Record<string, (opts: BenchOptions) => void | Promise<void>>;
type BenchName = keyof typeof BENCHES;
const NAMES = Object.keys(BENCHES) as BenchName[];
/** What `all` (and no name) runs: every bench but the swarm training runs (convergence, trust). */
const ALL = NAMES.filter((n) => n !== 'convergence' && n !== 'trust');

interface Options extends BenchOptions {
  names: BenchName[];
}

function parseOptions(argv: string[]): Options {
  const names: BenchName[] = [];
  let threads: number | undefined;
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') {
      quick = true;
    } else if (a === '--threads') {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < 1 || n > 1024) {
        throw new RangeError(invalidParameter('--threads', 'an integer in [1, 1024]', v));
      }
      threads = n;
    } else if (a === 'all') {
      names.push(...ALL);
    } else if ((NAMES as readonly string[]).includes(a)) {
      names.push(a as BenchName);
    } else {
      throw new RangeError(
        `${invalidParameter('argument', `one of ${NAMES.join(', ')}, all, --threads N, --quick`, a)}. ` +
          `Usage: npm run bench -- [${NAMES.join('|')}|all ...] [--threads N] [--quick]`,
      );
    }
  }
  return { names: names.length ? [...new Set(names)] : [...ALL], threads, quick };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  nativeBin(); // every bench needs it (train for its limits): fail before measuring anything
  for (const name of opts.names) await BENCHES[name](opts);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});

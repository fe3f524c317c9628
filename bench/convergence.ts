// The convergence bench: does int8 DiLoCo over 4 workers reach the val loss of 1 worker running plain AdamW
// on the same total tokens, and with how many fewer bytes than a per-step fp32 all-reduce (DDP)?
//
// Data: the Brown corpus, bytes tokenizer (vocab 257), prepared into a temporary directory. Model: `tiny`.
// - single-adamw: one in-process Engine, constant lr = the swarm's inner lr, same seed (same θ0), B, T,
//   weight decay and clip, 4 × rounds × H steps (convergence-baseline.ts).
// - diloco-int8-4: the real `covenant coordinator` and 4 `covenant worker` processes on loopback
//   (src/swarm/local-swarm.ts), minMembers 4, so every committed round has all 4; stopped after `rounds`
//   committed rounds.
// - diloco-int8-4-churn: the same with minMembers 3; one worker SIGKILLed after 1/3 and after 2/3 of the
//   rounds, each replaced at once by a fresh worker that must sync θ and the outer momentum first.
// Val loss everywhere: the mean over the first 8 eval batches of B×T of the val split (what a worker logs in
// round.commit after each commit; the single worker is measured the same way). Wire bytes: the bytesSent
// of each worker's committed all-reduce (failed attempts of a re-planned round are not in it). DDP: a ring
// all-reduce of the fp32 gradient every inner step sends 2(N−1)/N · 4 · params bytes per worker.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { DataLoader } from '../src/data/loader';
import { prepareData } from '../src/data/prepare';
import { LocalSwarm, LogLine, localRunConfig } from '../src/swarm/local-swarm';
import { RUN_DEFAULTS } from '../src/swarm/run-config';
import { parseModelConfig, PRESETS } from '../src/train/model-config';
import { BaselineResult, runBaseline, VAL_BATCHES } from './convergence-baseline';
import { busFactor } from './allreduce';
import { loadNote, machine, otherCpuBusy } from './machine';
import { BenchOptions } from './options';
import { withWorkDir } from './work-dir';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';

const WORKERS = 4;
const PRESET = 'tiny';
const VOCAB = 257; // the bytes tokenizer: 256 bytes + EOT
/** A swarm that commits nothing for this long is stuck (a round takes seconds here). */
const STALL_MS = 180_000;

export interface ConvergenceSettings {
  seed: number;
  B: number;
  T: number;
  /** Inner steps per round (H). */
  innerSteps: number;
  rounds: number;
  innerLr: number;
  outerLr: number;
  outerMomentum: number;
  weightDecay: number;
  gradClip: number;
  blockSize: number;
}

export function settingsFor(quick: boolean): ConvergenceSettings {
  return {
    seed: 7,
    B: 4,
    T: 64,
    innerSteps: 50,
    rounds: quick ? 12 : 30,
    innerLr: 2e-3,
    outerLr: RUN_DEFAULTS.outerLr,
    outerMomentum: RUN_DEFAULTS.outerMomentum,
    weightDecay: RUN_DEFAULTS.innerWeightDecay,
    gradClip: RUN_DEFAULTS.innerGradClip,
    blockSize: RUN_DEFAULTS.blockSize,
  };
}

interface Commit {
  worker: string;
  round: number;
  members: number;
  valLoss: number;
  bytesSent: number;
}

export interface SwarmResult {
  commits: Commit[];
  /** Committed rounds in order: round number, members, val loss (the members agree: θ is bit-identical). */
  rounds: Array<{ round: number; members: number; valLoss: number }>;
  tokens: number;
  kills: string[];
  joins: string[];
  seconds: number;
}

/** Runs a coordinator and 4 workers until `rounds` rounds committed; with churn, kills and replaces 2 workers. */
export async function runSwarm(s: ConvergenceSettings, dataDir: string, dir: string, churn: boolean, log: (m: string) => void): Promise<SwarmResult> {
  const commits: Commit[] = [];
  const onLine = (name: string, l: LogLine) => {
    if (l.event === 'round.commit' && name !== 'coordinator') {
      commits.push({ worker: name, round: num(l, 'round'), members: num(l, 'members'), valLoss: num(l, 'valLoss'), bytesSent: num(l, 'bytesSent') });
    } else if (l.level === 'error') {
      log(`${name}: ${JSON.stringify(l)}`);
    }
  };
  const swarm = new LocalSwarm({
    dir,
    dataDir,
    config: localRunConfig({
      runId: churn ? 'convergence-churn' : 'convergence',
      model: PRESET,
      vocabSize: VOCAB,
      seed: s.seed,
      innerSteps: s.innerSteps,
      batchSize: s.B,
      seqLen: s.T,
      innerLr: s.innerLr,
      innerWeightDecay: s.weightDecay,
      innerGradClip: s.gradClip,
      outerLr: s.outerLr,
      outerMomentum: s.outerMomentum,
      compression: 'int8',
      blockSize: s.blockSize,
      minMembers: churn ? WORKERS - 1 : WORKERS,
    }),
    threadsPerWorker: 1,
    onLine,
  });
  // Interrupted (SIGINT/SIGTERM → exit): take the children along.
  const killAll = () => {
    for (const c of [...swarm.workers.values(), swarm.coordinator]) c?.proc.kill('SIGKILL');
  };
  process.on('exit', killAll);
  const t0 = Date.now();
  const kills: string[] = [];
  const joins: string[] = [];
  const committed = () => [...new Set(commits.map((c) => c.round))].sort((a, b) => a - b);
  let seconds = NaN; // start to the last round's commit lines, not counting the stop
  try {
    await swarm.startCoordinator();
    for (let i = 0; i < WORKERS; i++) swarm.startWorker();
    const killAt = churn ? [Math.round(s.rounds / 3), Math.round((2 * s.rounds) / 3)] : [];
    let lastReported = 0;
    let lastProgress = Date.now();
    for (;;) {
      const done = committed();
      if (done.length > lastReported) {
        lastReported = done.length;
        lastProgress = Date.now();
        const last = commits.filter((c) => c.round === done[done.length - 1]);
        log(`round ${done.length}/${s.rounds} (#${done[done.length - 1]}): ${last[0]?.members} members, val loss ${fmt(last[0]?.valLoss, 4)}`);
      }
      if (killAt.length && done.length >= killAt[0]) {
        killAt.shift();
        const victim = [...swarm.workers.keys()].find((n) => !kills.includes(n))!;
        await swarm.kill(victim, 'SIGKILL');
        kills.push(victim);
        joins.push(swarm.startWorker());
        log(`killed ${victim} (SIGKILL) after ${done.length} committed rounds; started ${joins[joins.length - 1]}`);
      }
      if (done.length >= s.rounds) {
        // Every member of the last round logs its commit (and val loss) right after the verdict.
        const last = done[s.rounds - 1];
        const members = commits.find((c) => c.round === last)!.members;
        const until = Date.now() + 10_000;
        while (commits.filter((c) => c.round === last).length < members && Date.now() < until) await sleep(100);
        seconds = (Date.now() - t0) / 1000;
        break;
      }
      for (const [name, c] of swarm.workers) {
        if (!kills.includes(name) && (c.proc.exitCode !== null || c.proc.signalCode !== null)) {
          throw new Error(`worker ${name} exited (${c.proc.exitCode ?? c.proc.signalCode}) during the run; its log: ${path.join(dir, `${name}.log`)}`);
        }
      }
      if (Date.now() - lastProgress > STALL_MS) {
        const w = swarm.workers.get('w3')!;  // never killed
        throw new Error(`no round committed for ${STALL_MS / 1000} s (${done.length} of ${s.rounds} done); w3's last line: ` +
          `${JSON.stringify(w.lines[w.lines.length - 1])}; logs in ${dir}`);
      }
      await sleep(200);
    }
  } finally {
    await swarm.stop(20_000);
    process.off('exit', killAll);
  }
  const done = committed().slice(0, s.rounds);
  const rounds = done.map((round) => {
    const cs = commits.filter((c) => c.round === round);
    const vals = cs.map((c) => c.valLoss).filter(Number.isFinite);
    if (vals.some((v) => v !== vals[0])) log(`note: round ${round}: members logged different val losses (${vals.join(', ')})`);
    return { round, members: cs[0].members, valLoss: vals[0] ?? NaN };
  });
  const byRound = new Map(swarm.committedRounds().map((r) => [r.round, r.tokens]));
  const tokens = done.reduce((a, r) => a + (byRound.get(r) ?? NaN), 0);
  return { commits: commits.filter((c) => c.round <= done[done.length - 1]), rounds, tokens, kills, joins, seconds };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function benchConvergence(opts: BenchOptions): Promise<void> {
  await withWorkDir('convergence', (work) => run(opts, work));
}

async function run(opts: BenchOptions, work: string): Promise<void> {
  const s = settingsFor(opts.quick);
  const busy = otherCpuBusy();
  const log = (m: string) => process.stderr.write(`convergence: ${m}\n`);
  const dataDir = path.join(work, 'data');
  log('preparing Brown (bytes tokenizer)...');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir });
  const trainTokens = DataLoader.open(dataDir, { split: 'train' }).numTokens;
  const valTokens = DataLoader.open(dataDir, { split: 'val' }).numTokens;
  const model = parseModelConfig({ vocabSize: VOCAB, ...PRESETS[PRESET] });
  const mach = machine({ other_cpu_busy_start: busy, preset: PRESET, vocab: VOCAB, data: 'brown', tokenizer: 'bytes',
    train_tokens: trainTokens, val_tokens: valTokens, settings: s });

  const stepsPerWorker = s.rounds * s.innerSteps;
  const common = { bench: 'convergence', preset: PRESET, B: s.B, T: s.T, seed: s.seed, inner_lr: s.innerLr, weight_decay: s.weightDecay,
    grad_clip: s.gradClip, val_batches: VAL_BATCHES, val_tokens_evaluated: VAL_BATCHES * s.B * s.T };

  log(`single worker: ${WORKERS * stepsPerWorker} AdamW steps at lr ${s.innerLr}...`);
  const base: BaselineResult = await runBaseline(
    { model, dataDir, seed: s.seed, B: s.B, T: s.T, steps: WORKERS * stepsPerWorker, evalEvery: WORKERS * s.innerSteps, threads: 1,
      opt: { lr: s.innerLr, weightDecay: s.weightDecay, gradClip: s.gradClip } },
    (step, loss) => step % (WORKERS * s.innerSteps * 5) === 0 && log(`single worker: step ${step}, train loss ${fmt(loss, 4)}`),
  );
  const params = base.params;
  const rows: Row[] = [{
    ...common, impl: 'single-adamw', params, workers: 1, steps: WORKERS * stepsPerWorker, tokens: WORKERS * stepsPerWorker * s.B * s.T,
    val_loss: base.valLoss, final_train_loss: base.finalTrainLoss, seconds: base.seconds,
    val_curve: base.valCurve.map(([step, v]) => ({ step, val_loss: v })),
  }];

  for (const churn of [false, true]) {
    const impl = churn ? `diloco-int8-${WORKERS}-churn` : `diloco-int8-${WORKERS}`;
    log(`${impl}: ${s.rounds} rounds of H=${s.innerSteps}...`);
    const r = await runSwarm(s, dataDir, path.join(work, impl), churn, (m) => log(`${impl}: ${m}`));
    const wire = r.commits.reduce((a, c) => a + c.bytesSent, 0);
    // What DDP would send in the same worker-rounds: every inner step, a ring all-reduce of the fp32 gradient among that round's members.
    const ddp = r.commits.reduce((a, c) => a + busFactor(c.members) * 4 * params * s.innerSteps, 0);
    const final = r.rounds[r.rounds.length - 1].valLoss;
    rows.push({
      ...common, impl, params, workers: WORKERS, min_members: churn ? WORKERS - 1 : WORKERS, rounds: r.rounds.length, inner_steps: s.innerSteps,
      outer_lr: s.outerLr, outer_momentum: s.outerMomentum, compression: 'int8', block: s.blockSize, kills: r.kills.length,
      killed: r.kills, replacements: r.joins, members_per_round: r.rounds.map((x) => x.members), tokens: r.tokens,
      val_loss: final, val_loss_vs_single: final / base.valLoss,
      worker_rounds: r.commits.length, wire_bytes: wire, wire_bytes_per_worker_round: wire / r.commits.length,
      ddp_fp32_bytes: ddp, ddp_fp32_bytes_per_worker_round: ddp / r.commits.length, ddp_bytes_ratio: ddp / wire, seconds: r.seconds,
      val_curve: r.rounds.map((x) => ({ round: x.round, members: x.members, val_loss: x.valLoss })),
    });
  }
  loadNote(mach);

  console.log(`\nConvergence on Brown (bytes tokenizer, vocab ${VOCAB}), preset ${PRESET} (${params} parameters), B=${s.B} T=${s.T}, seed ${s.seed}`);
  console.log(`single-adamw: 1 process, ${WORKERS}·${s.rounds}·${s.innerSteps} = ${WORKERS * stepsPerWorker} AdamW steps, constant lr ${s.innerLr}, ` +
    `weight decay ${s.weightDecay}, clip ${s.gradClip}.`);
  console.log(`diloco: ${WORKERS} worker processes (1 thread each) on loopback, ${s.rounds} committed rounds of H=${s.innerSteps} inner AdamW steps ` +
    `(same lr, decay, clip), int8 Δ (block ${s.blockSize}, error feedback), outer Nesterov lr ${s.outerLr} momentum ${s.outerMomentum}; ` +
    `churn: minMembers ${WORKERS - 1}, a worker SIGKILLed and replaced after 1/3 and 2/3 of the rounds.`);
  console.log(`val loss: mean over the first ${VAL_BATCHES} val batches of B×T (${VAL_BATCHES * s.B * s.T} tokens), the same batches for every row. ` +
    'DDP: 2(N−1)/N · 4 · params bytes per worker per inner step (fp32 ring all-reduce of the gradient).');
  const single = rows[0];
  printTable('Final val loss and bytes per worker per round', ['impl', 'rounds', 'tokens', 'val loss', 'vs single', 'wire B/worker/round', 'DDP B/worker/round', 'DDP ÷ wire', 'seconds'],
    rows.map((r) => [String(r.impl), r.rounds === undefined ? '-' : String(r.rounds), String(r.tokens), fmt(num(r, 'val_loss'), 4),
      r === single ? '-' : `${fmt(100 * (num(r, 'val_loss_vs_single') - 1), 2)}%`, fmt(num(r, 'wire_bytes_per_worker_round'), 0),
      fmt(num(r, 'ddp_fp32_bytes_per_worker_round'), 0), r === single ? '-' : `${fmt(num(r, 'ddp_bytes_ratio'), 1)}×`, fmt(num(r, 'seconds'), 1)]));
  const curve = rows.filter((r) => r !== single);
  const marks = [...new Set([Math.round(s.rounds / 3), Math.round((2 * s.rounds) / 3), s.rounds].filter((k) => k >= 1))];
  printTable('Val loss along the run, by committed rounds (the single worker after the tokens of that many full 4-worker rounds)',
    ['rounds', 'tokens', 'single-adamw', ...curve.map((r) => String(r.impl))],
    marks.map((k) => [String(k), String(k * WORKERS * s.innerSteps * s.B * s.T), fmt(base.valCurve[k - 1]?.[1], 4),
      ...curve.map((r) => fmt((r.val_curve as Array<{ val_loss: number }>)[k - 1]?.val_loss, 4))]));

  const clean = rows.find((r) => r.impl === `diloco-int8-${WORKERS}`)!;
  const churned = rows.find((r) => r.impl === `diloco-int8-${WORKERS}-churn`)!;
  const pct = (r: Row) => 100 * (num(r, 'val_loss_vs_single') - 1);
  const verdict = (ok: boolean) => (ok ? 'met' : 'not met');
  console.log(`\nval loss within 3% of the single worker: ${fmt(pct(clean), 2)}% (${verdict(pct(clean) <= 3)})`);
  console.log(`≥ 100× fewer bytes than DDP: ${fmt(num(clean, 'ddp_bytes_ratio'), 1)}× (${verdict(num(clean, 'ddp_bytes_ratio') >= 100)})`);
  console.log(`with 1 of ${WORKERS} workers (25%) killed and replaced ${String(churned.kills)} times, within 5% of the single worker: ${fmt(pct(churned), 2)}% (${verdict(pct(churned) <= 5)})`);
  if (opts.quick) console.log('(--quick: fewer rounds than the full run; the targets are stated for the full run)');
  writeResult('convergence', mach, rows);
}

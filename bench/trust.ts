// The trust bench: what verification costs per round, and whether one hostile member moves the final loss.
//
// Data: the Brown corpus, bytes tokenizer (vocab 257), prepared into a temporary directory. Every run is the
// real `covenant coordinator` (with --data, so its validator runs the useful-work check) and 4 `covenant
// worker` processes (1 thread each) on loopback (src/swarm/local-swarm.ts), int8 Δ.
// - cost (preset `small`): verifyMembers 0 (every member checked every round), 1 (one sampled member per
//   round), and 1 with verifyEvery 5 (one member in about one round of 5, over more rounds). Per round, from
//   the log timestamps:
//   · training: per member, round.start → allreduce.start (the inner steps, compression and the commit wait),
//     the mean over the members;
//   · validator: the checks run one at a time on one thread (src/trust/round-verifier.ts); a check starts when
//     the validator is free and the member's Δ upload has arrived (the worker's trust.delta-upload line), and
//     ends at its trust.check line; the round's validator seconds are the sum over its checks. When the
//     validator keeps up this is the span trust.sample → last trust.check, which is reported too (it also
//     counts waiting for uploads and, when the validator falls behind, the previous rounds' checks);
//   · the coordinator process's CPU seconds over the run (/proc/PID/stat), per round: an upper bound of the
//     validator's CPU (it also holds the outer step and every RPC);
//   · bytes: the Δ uploads (trust.delta-upload bytes, 4·ceil(n/block) + n each), every member's scales
//     before its commitment (trust.scales bytes: 4·ceil(n/block)), its openings (trust.openings bytes: the
//     sampled blocks and what it sent of them in the ring, with their Merkle paths), plus one Commit request per
//     member (protobuf size from the fields, COMMIT_REQUEST_BYTES; a member that waits for the others resends
//     it every ≤ 500 ms, not counted: each is ~0.003% of one Δ) against the round's all-reduce wire bytes
//     (the members' bytesSent in round.commit).
//   Rounds with fewer than 4 members (minMembers is 3 so that an honest member's strikes cannot stall the run)
//   are left out of the fractions. Workers run with --eval-every 0 (no val loss) so a round is training only.
// - robustness (preset `tiny`, for time): an honest run of 4, then one run per hostile kind with 3 honest
//   workers and one started with COVENANT_TEST_HOSTILE=kind (src/diloco/hostile.ts), minMembers 3 so rounds
//   go on once the cheat is excluded; each stopped after the same number of committed rounds. Final val loss:
//   the honest members' round.commit valLoss of the last round (the mean over the first 8 eval batches of B×T
//   of the val split; the members agree, θ is bit-identical).
// On this 2-core machine the validator shares the CPU with the 4 workers, so its seconds are inflated by the
// contention just as the workers' are; on a real deployment it runs on the coordinator's own machine.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { DataLoader } from '../src/data/loader';
import { prepareData } from '../src/data/prepare';
import { BOUNDED_KINDS, HOSTILE_KINDS, HostileKind } from '../src/diloco/hostile';
import { LocalSwarm, LogLine, localRunConfig } from '../src/swarm/local-swarm';
import { RUN_DEFAULTS } from '../src/swarm/run-config';
import { parseModelConfig, PRESETS, PresetName } from '../src/train/model-config';
import { numParams } from '../src/train/param-layout';
import { loadNote, machine, otherCpuBusy } from './machine';
import { BenchOptions } from './options';
import { withWorkDir } from './work-dir';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';

const WORKERS = 4;
const VOCAB = 257; // the bytes tokenizer: 256 bytes + EOT
const COST_PRESET: PresetName = 'small';
const ROBUST_PRESET: PresetName = 'tiny';
const TARGET_BYTES = 0.05;
const TARGET_TIME = 0.1;
const TARGET_LOSS = 0.03;

interface TrustSettings {
  seed: number;
  B: number;
  T: number;
  innerLr: number;
  blockSize: number;
  /** Cost runs: inner steps per round (H) and rounds measured with verifyEvery 1; H and rounds with verifyEvery 5. */
  costH: number;
  costRounds: number;
  costHEvery: number;
  costRoundsEvery: number;
  /** Robustness runs: H and committed rounds. */
  robustH: number;
  robustRounds: number;
}

function settingsFor(quick: boolean): TrustSettings {
  return {
    seed: 7,
    B: 4,
    T: 64,
    innerLr: 2e-3,
    blockSize: RUN_DEFAULTS.blockSize,
    costH: quick ? 20 : 50,
    costRounds: quick ? 2 : 4,
    costHEvery: quick ? 20 : RUN_DEFAULTS.innerSteps,
    costRoundsEvery: quick ? 5 : 10,
    robustH: 20,
    robustRounds: quick ? 6 : 15,
  };
}

/**
 * Protobuf size of one CommitRequest (proto/coordinator.proto) for a run id: RequestMeta (run id, version,
 * 40-hex peer id, 32-byte key, ms timestamp, 16-byte nonce, 64-byte signature), CollectiveId, 64-hex Merkle
 * root, two doubles, tokens, num_blocks, the 64-hex scales SHA-256 and the scale bound (a double).
 */
export function commitRequestBytes(runId: string, round: number, tokens: number, numBlocks: number): number {
  const varint = (x: number) => Math.max(1, Math.ceil(Math.log2(x + 1) / 7));
  const field = (len: number) => 1 + varint(len) + len;
  const meta = field(runId.length) + 2 + field(40) + field(32) + 1 + varint(Date.now()) + field(16) + field(64);
  const id = 1 + varint(round) + 2; // attempt 0 is proto3's default: not written
  return field(meta) + field(id) + field(64) + 9 + 1 + varint(tokens) + 9 + 1 + varint(numBlocks) + field(64) + 9;
}

/** utime + stime of a process in seconds (Linux USER_HZ is 100). */
function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

const ms = (l: LogLine) => Date.parse(String(l.time));
const sleep = (t: number) => new Promise<void>((r) => setTimeout(r, t));
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

interface SwarmRun {
  lines: Array<{ name: string; l: LogLine }>;
  peerOf: Map<string, string>;
  /** The first `rounds` committed rounds. */
  rounds: number[];
  coordCpuSeconds: number;
  seconds: number;
}

interface SwarmSpec {
  runId: string;
  preset: PresetName;
  H: number;
  rounds: number;
  verifyMembers: number;
  verifyEvery?: number;
  hostile?: HostileKind;
  /** Swarm size (default WORKERS) and, instead of `hostile`, several cheats (one worker each). */
  workers?: number;
  hostiles?: HostileKind[];
  workerArgs: string[];
  /** Wait for the validator's checks of the measured rounds before stopping. */
  waitChecks: boolean;
  stallMs: number;
}

/** Runs a coordinator and 4 workers (the last hostile when asked) until `rounds` rounds committed; keeps every log line. */
async function runSwarm(spec: SwarmSpec, s: TrustSettings, dataDir: string, dir: string, log: (m: string) => void): Promise<SwarmRun> {
  const lines: Array<{ name: string; l: LogLine }> = [];
  const peerOf = new Map<string, string>();
  const committed = new Set<number>();
  const onLine = (name: string, l: LogLine) => {
    lines.push({ name, l });
    if (l.event === 'worker.join' && typeof l.peerId === 'string') peerOf.set(name, l.peerId);
    if (l.event === 'round.commit' && name !== 'coordinator') committed.add(num(l, 'round'));
    if (l.level === 'error') log(`${name}: ${JSON.stringify(l)}`);
  };
  const swarm = new LocalSwarm({
    dir,
    dataDir,
    config: localRunConfig({
      runId: spec.runId,
      model: spec.preset,
      vocabSize: VOCAB,
      seed: s.seed,
      innerSteps: spec.H,
      batchSize: s.B,
      seqLen: s.T,
      innerLr: s.innerLr,
      compression: 'int8',
      blockSize: s.blockSize,
      minMembers: (spec.workers ?? WORKERS) - Math.max(1, spec.hostiles?.length ?? 0),
      planDelayMs: 3000,
      verifyMembers: spec.verifyMembers,
      verifyEvery: spec.verifyEvery ?? 1,
      // A validator that falls behind must not turn its own lag into "no Δ received" strikes.
      verifyTimeoutMs: 1_800_000,
      roundDeadlineMs: 600_000,
      allreduceTimeoutMs: 30_000,
    }),
    threadsPerWorker: 1,
    workerArgs: spec.workerArgs,
    onLine,
  });
  const killAll = () => {
    for (const c of [...swarm.workers.values(), swarm.coordinator]) c?.proc.kill('SIGKILL');
  };
  process.on('exit', killAll);
  const t0 = Date.now();
  let coordCpuSeconds = NaN;
  let seconds = NaN;
  const done = () => [...committed].sort((a, b) => a - b);
  try {
    await swarm.startCoordinator();
    const cpu0 = cpuSeconds(swarm.coordinator?.proc.pid);
    const cheats = spec.hostiles ?? (spec.hostile ? [spec.hostile] : []);
    for (let i = 0; i < (spec.workers ?? WORKERS) - cheats.length; i++) swarm.startWorker();
    cheats.forEach((kind, i) => swarm.startWorker(i === 0 ? 'cheat' : `cheat${i + 1}`, { env: { COVENANT_TEST_HOSTILE: kind } }));
    let reported = 0;
    let lastProgress = Date.now();
    for (;;) {
      const d = done();
      if (d.length > reported) {
        reported = d.length;
        lastProgress = Date.now();
        log(`round ${d.length}/${spec.rounds} (#${d[d.length - 1]})`);
      }
      if (d.length >= spec.rounds) break;
      for (const [name, c] of swarm.workers) {
        if (c.proc.exitCode !== null || c.proc.signalCode !== null) throw new Error(`worker ${name} exited (${c.proc.exitCode ?? c.proc.signalCode}); logs in ${dir}`);
      }
      if (Date.now() - lastProgress > spec.stallMs) throw new Error(`no round committed for ${spec.stallMs / 1000} s (${d.length} of ${spec.rounds} done); logs in ${dir}`);
      await sleep(200);
    }
    const measured = done().slice(0, spec.rounds);
    const last = measured[measured.length - 1];
    // Every member of the last round logs its commit; with waitChecks, the validator finishes the rounds' checks.
    const until = Date.now() + (spec.waitChecks ? 900_000 : 10_000);
    const ready = () => {
      const coord = lines.filter((x) => x.name === 'coordinator');
      const commits = lines.filter((x) => x.l.event === 'round.commit' && x.name !== 'coordinator' && x.l.round === last);
      const members = num(commits[0]?.l, 'members');
      if (!(commits.length >= members)) return false;
      if (!spec.waitChecks) return true;
      const checkedRounds = new Set(coord.filter((x) => x.l.event === 'trust.sample').map((x) => x.l.round));
      // With verifyEvery > 1 most rounds are not checked; the last round's openings mark that its checks ran.
      if ((spec.verifyEvery ?? 1) > 1 && !coord.some((x) => (x.l.event === 'trust.ring-audit' || x.l.event === 'trust.ring-mismatch') && x.l.round === last)) return false;
      return measured.filter((r) => (spec.verifyEvery ?? 1) === 1 || checkedRounds.has(r)).every((r) => {
        const sample = coord.find((x) => x.l.event === 'trust.sample' && x.l.round === r);
        const want = Array.isArray(sample?.l.sampled) ? (sample.l.sampled as unknown[]).length : 0;
        return sample !== undefined && coord.filter((x) => x.l.event === 'trust.check' && x.l.round === r).length >= want;
      });
    };
    if (spec.waitChecks) log('waiting for the validator to finish the measured rounds...');
    while (!ready() && Date.now() < until) await sleep(200);
    seconds = (Date.now() - t0) / 1000;
    coordCpuSeconds = cpuSeconds(swarm.coordinator?.proc.pid) - cpu0;
    return { lines, peerOf, rounds: measured, coordCpuSeconds, seconds };
  } finally {
    await swarm.stop(20_000);
    process.off('exit', killAll);
  }
}

/** Per-round cost figures of a verification run at 4 members. */
function costFigures(run: SwarmRun, runId: string, tokensPerRound: number, numBlocks: number) {
  const nameOf = new Map([...run.peerOf].map(([n, p]) => [p, n]));
  const coord = run.lines.filter((x) => x.name === 'coordinator').map((x) => x.l);
  const workerLines = run.lines.filter((x) => x.name !== 'coordinator');
  // Validator busy time per check, in the order the checks ended (they run one at a time).
  const checks = coord.filter((l) => l.event === 'trust.check').sort((a, b) => ms(a) - ms(b));
  const busy = new Map<number, number>();
  let free = 0;
  for (const c of checks) {
    const round = num(c, 'round');
    const sample = coord.find((l) => l.event === 'trust.sample' && l.round === round);
    const upload = workerLines.find((x) => x.name === nameOf.get(String(c.peerId)) && x.l.event === 'trust.delta-upload' && x.l.round === round);
    const start = Math.max(free, sample ? ms(sample) : 0, upload ? ms(upload.l) : 0);
    const end = ms(c);
    busy.set(round, (busy.get(round) ?? 0) + Math.max(0, end - start) / 1000);
    free = end;
  }
  const perRound = run.rounds.map((round) => {
    const commits = workerLines.filter((x) => x.l.event === 'round.commit' && x.l.round === round);
    const members = num(commits[0]?.l, 'members');
    const inner = commits.map(({ name }) => {
      const mine = workerLines.filter((x) => x.name === name && x.l.round === round);
      const starts = mine.filter((x) => x.l.event === 'round.start');
      const ar = mine.filter((x) => x.l.event === 'allreduce.start');
      const a = ar[ar.length - 1];
      const st = starts.filter((x) => a && ms(x.l) <= ms(a.l)).pop();
      return a && st ? (ms(a.l) - ms(st.l)) / 1000 : NaN;
    });
    const wire = commits.reduce((acc, x) => acc + num(x.l, 'bytesSent'), 0);
    const uploads = workerLines.filter((x) => x.l.event === 'trust.delta-upload' && x.l.round === round);
    const deltaBytes = uploads.reduce((acc, x) => acc + num(x.l, 'bytes'), 0);
    const openingBytes = workerLines.filter((x) => (x.l.event === 'trust.openings' || x.l.event === 'trust.scales') && x.l.round === round).reduce((acc, x) => acc + num(x.l, 'bytes'), 0);
    const commitBytes = members * commitRequestBytes(runId, round, tokensPerRound, numBlocks);
    const sample = coord.find((l) => l.event === 'trust.sample' && l.round === round);
    const roundChecks = checks.filter((l) => l.round === round);
    const span = sample && roundChecks.length ? (ms(roundChecks[roundChecks.length - 1]) - ms(sample)) / 1000 : NaN;
    return {
      round, members, inner_seconds: mean(inner), validator_seconds: busy.get(round) ?? NaN, validator_span_seconds: span,
      checked: roundChecks.length, failed: roundChecks.filter((l) => l.ok === false).length,
      wire_bytes: wire, delta_fetch_bytes: deltaBytes, opening_bytes: openingBytes, commit_bytes: commitBytes,
    };
  });
  return perRound;
}

export async function benchTrust(opts: BenchOptions): Promise<void> {
  await withWorkDir('trust', (work) => run(opts, work));
}

/** The parts of the bench, all by default; COVENANT_TRUST_PARTS=cost,cost-every,robust,robust6 picks some (the JSON is then trust-PARTS.json). */
const TRUST_PARTS = ['cost', 'cost-every', 'robust', 'robust6'] as const;

function trustParts(env: string | undefined): Set<string> {
  if (!env) return new Set(TRUST_PARTS);
  const parts = env.split(',').map((x) => x.trim()).filter(Boolean);
  for (const p of parts) if (!(TRUST_PARTS as readonly string[]).includes(p)) throw new Error(`COVENANT_TRUST_PARTS: ${p} is not one of ${TRUST_PARTS.join(', ')}`);
  return new Set(parts);
}

async function run(opts: BenchOptions, work: string): Promise<void> {
  const s = settingsFor(opts.quick);
  const parts = trustParts(process.env.COVENANT_TRUST_PARTS);
  const busy = otherCpuBusy();
  const log = (m: string) => process.stderr.write(`trust: ${m}\n`);
  const dataDir = path.join(work, 'data');
  log('preparing Brown (bytes tokenizer)...');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir });
  const trainTokens = DataLoader.open(dataDir, { split: 'train' }).numTokens;
  const mach = machine({ other_cpu_busy_start: busy, vocab: VOCAB, data: 'brown', tokenizer: 'bytes', train_tokens: trainTokens, settings: s });
  const paramsOf = (p: PresetName) => numParams(parseModelConfig({ vocabSize: VOCAB, ...PRESETS[p] }));
  const rows: Row[] = [];

  // 1. Cost at 4 members, preset small.
  const costParams = paramsOf(COST_PRESET);
  const numBlocks = Math.ceil(costParams / s.blockSize);
  const costRuns = [
    ...(parts.has('cost') ? [{ verifyMembers: 0, verifyEvery: 1, rounds: s.costRounds, H: s.costH }, { verifyMembers: 1, verifyEvery: 1, rounds: s.costRounds, H: s.costH }] : []),
    ...(parts.has('cost-every') ? [{ verifyMembers: 1, verifyEvery: 5, rounds: s.costRoundsEvery, H: s.costHEvery }] : []),
  ];
  for (const { verifyMembers, verifyEvery, rounds, H } of costRuns) {
    const tokensPerRound = H * s.B * s.T;
    const runId = `trust-cost-v${verifyMembers}-e${verifyEvery}-h${H}`;
    const tag = `cost verifyMembers=${verifyMembers} verifyEvery=${verifyEvery} H=${H}`;
    log(`${tag}: ${rounds} rounds of H=${H}, preset ${COST_PRESET}...`);
    const r = await runSwarm({ runId, preset: COST_PRESET, H, rounds, verifyMembers, verifyEvery, workerArgs: ['--eval-every', '0'], waitChecks: true, stallMs: 600_000 },
      s, dataDir, path.join(work, runId), (m) => log(`${tag}: ${m}`));
    const per = costFigures(r, runId, tokensPerRound, numBlocks);
    const full = per.filter((x) => x.members === WORKERS);
    const sum = (k: keyof (typeof per)[number]) => full.reduce((a, x) => a + (Number.isFinite(x[k] as number) ? (x[k] as number) : 0), 0);
    const extraBytes = sum('delta_fetch_bytes') + sum('opening_bytes') + sum('commit_bytes');
    rows.push({
      impl: 'covenant', bench: 'trust', case: 'cost', preset: COST_PRESET, params: costParams, members: WORKERS, verify_members: verifyMembers, verify_every: verifyEvery,
      inner_steps: H, B: s.B, T: s.T, compression: 'int8', block: s.blockSize, verify_batches: RUN_DEFAULTS.verifyBatches,
      rounds: per.length, rounds_at_4: full.length,
      inner_seconds_per_round: sum('inner_seconds') / full.length,
      validator_seconds_per_round: sum('validator_seconds') / full.length,
      validator_span_seconds_per_round: sum('validator_span_seconds') / full.length,
      coordinator_cpu_seconds_per_round: r.coordCpuSeconds / per.length,
      checks_per_round: sum('checked') / full.length, checks_failed: per.reduce((a, x) => a + x.failed, 0),
      wire_bytes_per_round: sum('wire_bytes') / full.length,
      delta_fetch_bytes_per_round: sum('delta_fetch_bytes') / full.length,
      opening_bytes_per_round: sum('opening_bytes') / full.length,
      commit_bytes_per_round: sum('commit_bytes') / full.length,
      extra_bytes_fraction: extraBytes / sum('wire_bytes'),
      extra_time_fraction: sum('validator_seconds') / sum('inner_seconds'),
      seconds: r.seconds,
      per_round: per,
    });
  }

  // 2. Robustness, preset tiny: honest run vs one hostile member of each kind.
  for (const hostile of parts.has('robust') ? [undefined, ...HOSTILE_KINDS, ...BOUNDED_KINDS] : []) {
    const runId = `trust-robust-${hostile ?? 'honest'}`;
    const tag = hostile ? `hostile ${hostile}` : 'honest';
    log(`${tag}: ${s.robustRounds} rounds of H=${s.robustH}, preset ${ROBUST_PRESET}...`);
    const r = await runSwarm({ runId, preset: ROBUST_PRESET, H: s.robustH, rounds: s.robustRounds, verifyMembers: 0, hostile, workerArgs: [], waitChecks: false, stallMs: 240_000 },
      s, dataDir, path.join(work, runId), (m) => log(`${tag}: ${m}`));
    const honestCommits = r.lines.filter((x) => x.name !== 'cheat' && x.name !== 'coordinator' && x.l.event === 'round.commit');
    const valOf = (round: number) => num(honestCommits.find((x) => x.l.round === round && Number.isFinite(num(x.l, 'valLoss')))?.l, 'valLoss');
    const last = r.rounds[r.rounds.length - 1];
    const cheatId = r.peerOf.get('cheat');
    const caught = r.lines.filter((x) => x.name === 'coordinator' && (x.l.event === 'trust.failed' || x.l.event === 'trust.commit-refused'));
    // The ring audit also fails the rounds a ring-mismatch cheat was in: count those too.
    const cheatRounds = new Set(r.lines.filter((x) => x.name === 'cheat' && x.l.event === 'allreduce.start').map((x) => x.l.round));
    const audits = r.lines.filter((x) => x.name === 'coordinator' && x.l.event === 'trust.ring-mismatch' && cheatRounds.has(x.l.round));
    const ofCheat = [...caught.filter((x) => x.l.peerId === cheatId), ...audits].sort((a, b) => num(a.l, 'round') - num(b.l, 'round'));
    rows.push({
      impl: 'covenant', bench: 'trust', case: 'robustness', preset: ROBUST_PRESET, params: paramsOf(ROBUST_PRESET), members: WORKERS,
      hostile: hostile ?? 'none', min_members: WORKERS - 1, verify_members: 0, inner_steps: s.robustH, B: s.B, T: s.T, inner_lr: s.innerLr,
      rounds: r.rounds.length, val_loss: valOf(last),
      members_per_round: r.rounds.map((round) => num(honestCommits.find((x) => x.l.round === round)?.l, 'members')),
      cheat_first_caught_round: hostile ? num(ofCheat[0]?.l, 'round') : undefined,
      cheat_first_round: hostile ? num(r.lines.find((x) => x.name === 'cheat' && x.l.event === 'round.start')?.l, 'round') : undefined,
      cheat_failures: hostile ? ofCheat.length : undefined,
      honest_failures: caught.filter((x) => x.l.peerId !== cheatId).length,
      val_curve: r.rounds.map((round) => ({ round, val_loss: valOf(round) })),
      seconds: r.seconds,
    });
  }
  // 3. Two cheats of different kinds among 6 members, against an honest run of 6.
  const twoCheats: HostileKind[] = ['random-tokens', 'scaled'];
  for (const hostiles of parts.has('robust6') ? [[], twoCheats] : []) {
    const runId = `trust-robust6-${hostiles.length ? 'two' : 'honest'}`;
    const tag = hostiles.length ? `6 members, cheats ${hostiles.join(' + ')}` : '6 members, honest';
    log(`${tag}: ${s.robustRounds} rounds of H=${s.robustH}, preset ${ROBUST_PRESET}...`);
    const r = await runSwarm({ runId, preset: ROBUST_PRESET, H: s.robustH, rounds: s.robustRounds, verifyMembers: 0, workers: 6, hostiles, workerArgs: [], waitChecks: false, stallMs: 240_000 },
      s, dataDir, path.join(work, runId), (m) => log(`${tag}: ${m}`));
    const honestCommits = r.lines.filter((x) => !x.name.startsWith('cheat') && x.name !== 'coordinator' && x.l.event === 'round.commit');
    const last = r.rounds[r.rounds.length - 1];
    const cheatIds = new Set([...r.peerOf].filter(([n]) => n.startsWith('cheat')).map(([, p]) => p));
    const caught = r.lines.filter((x) => x.name === 'coordinator' && (x.l.event === 'trust.failed' || x.l.event === 'trust.commit-refused'));
    rows.push({
      impl: 'covenant', bench: 'trust', case: 'robustness-6', preset: ROBUST_PRESET, params: paramsOf(ROBUST_PRESET), members: 6,
      hostile: hostiles.length ? hostiles.join('+') : 'none', verify_members: 0, inner_steps: s.robustH, B: s.B, T: s.T, inner_lr: s.innerLr,
      rounds: r.rounds.length, val_loss: num(honestCommits.find((x) => x.l.round === last && Number.isFinite(num(x.l, 'valLoss')))?.l, 'valLoss'),
      cheats_caught: new Set(caught.filter((x) => cheatIds.has(x.l.peerId as string)).map((x) => x.l.peerId)).size,
      honest_failures: caught.filter((x) => !cheatIds.has(x.l.peerId as string)).length,
      seconds: r.seconds,
    });
  }
  const honest6 = rows.find((x) => x.case === 'robustness-6' && x.hostile === 'none')!;
  for (const x of rows.filter((y) => y.case === 'robustness-6')) x.val_loss_vs_honest = num(x, 'val_loss') / num(honest6, 'val_loss') - 1;

  const honest = rows.find((x) => x.case === 'robustness' && x.hostile === 'none')!;
  for (const x of rows.filter((y) => y.case === 'robustness')) x.val_loss_vs_honest = num(x, 'val_loss') / num(honest, 'val_loss') - 1;
  loadNote(mach);

  const costRows = rows.filter((x) => x.case === 'cost');
  const robustRows = rows.filter((x) => x.case === 'robustness');
  console.log(`\nTrust on Brown (bytes tokenizer, vocab ${VOCAB}), ${WORKERS} worker processes (1 thread each) and the coordinator's validator on one machine, loopback, int8 Δ (block ${s.blockSize}).`);
  console.log(`cost: preset ${COST_PRESET} (${costParams} parameters), B=${s.B} T=${s.T}, H=${s.costH} inner steps per round and ${s.costRounds} rounds with verifyEvery 1, ` +
    `H=${s.costHEvery} (the run default) and ${s.costRoundsEvery} rounds with verifyEvery 5, ` +
    `verifyBatches ${RUN_DEFAULTS.verifyBatches} (4 × ${RUN_DEFAULTS.verifyBatches} evals of B×T per checked member); ` +
    'training = round.start → allreduce.start; validator = its busy seconds on the round\'s checks; bytes vs the round\'s all-reduce wire bytes.');
  if (costRows.length) printTable('Verification cost per round at 4 members', ['verifyMembers/Every', 'H', 'rounds', 'checks/round', 'train s', 'validator s', 'span s', 'coord CPU s', 'wire MB', 'Δ fetch MB', 'scales+openings kB', 'commit B', 'extra time', 'extra bytes'],
    costRows.map((x) => [`${String(x.verify_members)}/${String(x.verify_every)}`, String(x.inner_steps), String(x.rounds_at_4), fmt(num(x, 'checks_per_round'), 2), fmt(num(x, 'inner_seconds_per_round'), 1),
      fmt(num(x, 'validator_seconds_per_round'), 1), fmt(num(x, 'validator_span_seconds_per_round'), 1), fmt(num(x, 'coordinator_cpu_seconds_per_round'), 1),
      fmt(num(x, 'wire_bytes_per_round') / 1e6, 2), fmt(num(x, 'delta_fetch_bytes_per_round') / 1e6, 2), fmt(num(x, 'opening_bytes_per_round') / 1e3, 1), fmt(num(x, 'commit_bytes_per_round'), 0),
      `${fmt(100 * num(x, 'extra_time_fraction'), 1)}%`, `${fmt(100 * num(x, 'extra_bytes_fraction'), 1)}%`]));
  if (robustRows.length) console.log(`robustness: preset ${ROBUST_PRESET} (${paramsOf(ROBUST_PRESET)} parameters, for time), H=${s.robustH}, lr ${s.innerLr}, minMembers ${WORKERS - 1}, ` +
    `${s.robustRounds} committed rounds each; val loss of the honest members after the last round.`);
  if (robustRows.length) printTable('Final val loss, honest run of 4 vs one hostile member', ['hostile', 'rounds', 'val loss', 'vs honest', 'cheat caught (round, first)', 'honest strikes', 'seconds'],
    robustRows.map((x) => [String(x.hostile), String(x.rounds), fmt(num(x, 'val_loss'), 4), `${fmt(100 * num(x, 'val_loss_vs_honest'), 2)}%`,
      x.hostile === 'none' ? '-' : `${fmt(num(x, 'cheat_first_caught_round'), 0)} (${fmt(num(x, 'cheat_first_round'), 0)})`, String(x.honest_failures), fmt(num(x, 'seconds'), 1)]));

  if (parts.has('robust6')) printTable('Final val loss, honest run of 6 vs two hostile members', ['hostile', 'rounds', 'val loss', 'vs honest', 'cheats caught', 'honest strikes', 'seconds'],
    rows.filter((x) => x.case === 'robustness-6').map((x) => [String(x.hostile), String(x.rounds), fmt(num(x, 'val_loss'), 4), `${fmt(100 * num(x, 'val_loss_vs_honest'), 2)}%`,
      String(x.cheats_caught ?? '-'), String(x.honest_failures), fmt(num(x, 'seconds'), 1)]));

  const verdict = (ok: boolean) => (ok ? 'met' : 'not met');
  for (const x of costRows) {
    const b = num(x, 'extra_bytes_fraction');
    const t = num(x, 'extra_time_fraction');
    console.log(`verifyMembers ${String(x.verify_members)}, verifyEvery ${String(x.verify_every)}, H=${String(x.inner_steps)}: extra bytes ${fmt(100 * b, 1)}% (≤ ${100 * TARGET_BYTES}%: ${verdict(b <= TARGET_BYTES)}), ` +
      `extra time ${fmt(100 * t, 1)}% (≤ ${100 * TARGET_TIME}%: ${verdict(t <= TARGET_TIME)})`);
  }
  const worst = Math.max(...robustRows.map((x) => Math.abs(num(x, 'val_loss_vs_honest'))));
  if (robustRows.length) console.log(`one hostile member of each kind, final val loss within ${100 * TARGET_LOSS}% of the honest run: worst ${fmt(100 * worst, 2)}% (${verdict(worst <= TARGET_LOSS)})`);
  if (opts.quick) console.log('(--quick: shorter rounds and fewer of them than the full run; the targets are stated for the full run)');
  writeResult(parts.size === TRUST_PARTS.length ? 'trust' : `trust-${[...parts].join('-')}`, mach, rows);
}

// The swarm end to end: a coordinator and workers as real `covenant` processes on loopback (LocalSwarm),
// through the churn the issue names — rounds commit with identical θ hashes and falling val loss, a worker
// SIGKILLed in a round is planned out and the survivors commit, a newcomer syncs and matches, the
// coordinator restarts without losing a committed round, a worker restarted on its state directory is the
// same peer, hostile requests are refused without disturbing the run, and /metrics moves.
import * as grpc from '@grpc/grpc-js';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataLoader } from '../src/data/loader';
import { prepareData } from '../src/data/prepare';
import { Engine } from '../src/native';
import { PRESETS } from '../src/train/model-config';
import { SignedClient } from '../src/swarm/grpc-client';
import { Identity } from '../src/swarm/identity';
import { coordinatorService, CoordinatorMethods, MAX_MESSAGE_BYTES } from '../src/swarm/proto';
import { CLI_MAIN, LocalSwarm, LogLine, localRunConfig } from '../src/swarm/local-swarm';
import { CommitBody, entryProblem } from '../src/ledger/entry';
import { readLedgerFile } from '../src/ledger/ledger';
import { ledgerBalances } from '../src/ledger/verify';
import { RpcError } from '../src/swarm/rpc-error';
import { haveCudaDevice } from './helpers/cuda';
import { parsePrometheusText, sampleValue } from './helpers/prom-text';

jest.setTimeout(300_000);

const resolveModel = (preset: 'tiny', vocabSize: number) => ({ vocabSize, ...PRESETS[preset] });

let tmp: string;
let swarm: LocalSwarm;
/** round → worker name → θ hash it committed. */
const hashes = new Map<number, Map<string, string>>();
const valLoss = new Map<number, number>();
const peerIds = new Map<string, string[]>();

function onLine(name: string, l: LogLine): void {
  if (l.event === 'round.commit' && l.role === 'worker') {
    const r = l.round as number;
    if (!hashes.has(r)) hashes.set(r, new Map());
    hashes.get(r)!.set(name, l.thetaSha256 as string);
    if (typeof l.valLoss === 'number') valLoss.set(r, l.valLoss);
  }
  if (l.event === 'worker.join') peerIds.set(name, [...(peerIds.get(name) ?? []), l.peerId as string]);
}

/** Resolves once the coordinator has saved round ≥ `round` (its state.commit line). */
function committed(round: number, timeoutMs = 120_000, from = 0): Promise<LogLine> {
  return swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && (l.round as number) >= round, timeoutMs, from);
}

/** The θ hashes the members of a committed round logged (a worker logs its commit a little after the coordinator saves it). */
async function memberHashes(entry: { round: number; members: string[] }, timeoutMs = 30_000): Promise<Set<string>> {
  const t0 = Date.now();
  while ((hashes.get(entry.round)?.size ?? 0) < entry.members.length && Date.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  return new Set(hashes.get(entry.round)?.values() ?? []);
}

function lastSavedRound(): number {
  const rounds = swarm.committedRounds();
  return rounds.length ? rounds[rounds.length - 1].round : 0;
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(url.replace(/\/?$/, '/metrics').replace(/\/metrics\/metrics$/, '/metrics'));
  expect(res.status).toBe(200);
  return res.text();
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-swarm-'));
  const dataDir = path.join(tmp, 'data');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir });
  swarm = new LocalSwarm({
    dir: path.join(tmp, 'run'),
    dataDir,
    config: localRunConfig({ model: 'tiny', vocabSize: 257, innerSteps: 12, innerLr: 2e-3, minMembers: 2, planDelayMs: 800, heartbeatTimeoutMs: 2500, allreduceTimeoutMs: 2500, maxAttempts: 4 }),
    metrics: true,
    onLine,
  });
  await swarm.startCoordinator();
  for (let i = 0; i < 3; i++) swarm.startWorker();
});

afterAll(async () => {
  await swarm?.stop(10_000);
  if (!process.env.COVENANT_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

test('3 workers commit rounds: identical θ hashes on every member, val loss falls, the coordinator saves each round', async () => {
  // minMembers is 2, so the first round may start before the third worker has joined.
  await swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && swarm.committedRounds().filter((e) => e.members.length === 3).length >= 3, 120_000);
  const rounds = swarm.committedRounds();
  for (const entry of rounds) {
    // Every member that reported the commit holds the coordinator's hash.
    expect(await memberHashes(entry)).toEqual(new Set([entry.thetaSha256]));
    expect(entry.tokens).toBe(entry.members.length * 12 * 4 * 64);
  }
  const full = rounds.filter((e) => e.members.length === 3);
  expect(full.length).toBeGreaterThanOrEqual(3);
  // Val loss on the workers' val batches: θ(0) (computed here), then after the first and the last round.
  const engine = Engine.create({ model: resolveModel('tiny', 257), seed: 7, threads: 1 });
  const val = DataLoader.open(path.join(tmp, 'data'), { split: 'val' });
  let initial = 0;
  for (const b of val.evalBatches(4, 64, 8)) initial += (await engine.evalLoss(b, 4, 64)) / 8;
  engine.dispose();
  // (An early round can overshoot — the first outer step moves 1.33 × the mean Δ — so judge the trend.)
  const vals = rounds.map((r) => valLoss.get(r.round)!).filter((v) => v !== undefined);
  expect(Math.min(...vals)).toBeLessThan(initial - 2);
  expect(vals[vals.length - 1]).toBeLessThan(initial - 1.5);
  // The coordinator's global state file is the last committed round (a newcomer gets it).
  expect(fs.existsSync(path.join(swarm.coordinatorState, 'global-state.safetensors'))).toBe(true);
});

test('/metrics of the coordinator and a worker parse as Prometheus text and the key series move', async () => {
  const wUrl = swarm.child('w1').metricsUrl!;
  const cUrl = swarm.child('coordinator').metricsUrl!;
  const w1 = parsePrometheusText(await scrape(wUrl));
  const c1 = parsePrometheusText(await scrape(cUrl));
  const saved = lastSavedRound();
  await committed(saved + 1);
  await new Promise((r) => setTimeout(r, 300));
  const w2 = parsePrometheusText(await scrape(wUrl));
  const c2 = parsePrometheusText(await scrape(cUrl));
  for (const name of ['covenant_train_tokens_total', 'covenant_train_inner_steps_total', 'covenant_allreduce_sent_bytes_total', 'covenant_rounds_committed_total']) {
    expect(sampleValue(w2, name)).toBeGreaterThan(sampleValue(w1, name));
  }
  expect(sampleValue(w2, 'covenant_train_loss')).toBeGreaterThan(0);
  expect(sampleValue(w2, 'covenant_allreduce_compression_ratio')).toBeGreaterThan(3);
  expect(sampleValue(c2, 'covenant_rounds_committed_total')).toBeGreaterThan(sampleValue(c1, 'covenant_rounds_committed_total'));
  expect(sampleValue(c2, 'covenant_swarm_members')).toBe(3);
  expect(sampleValue(c2, 'covenant_ledger_entries_total', { type: 'commit' })).toBeGreaterThan(0);
  expect(sampleValue(c2, 'covenant_trust_checks_total', { result: 'pass' })).toBeGreaterThan(0);
});

test('hostile requests are refused and do not disturb the run', async () => {
  const stranger = Identity.generate();
  const address = `127.0.0.1:${swarm.coordinatorPort}`;
  const wrongRun = new SignedClient(coordinatorService(), { address, identity: stranger, runId: 'some-other-run' });
  const client = new SignedClient<CoordinatorMethods>(coordinatorService(), { address, identity: stranger, runId: swarm.runId });
  const refused = async (p: Promise<unknown>) => (await p.then(() => undefined, (e: unknown) => e)) as RpcError;
  try {
    const before = lastSavedRound();
    expect((await refused(wrongRun.call('heartbeat', {}))).reason).toBe('run-mismatch');
    const req = client.sign('getPlan', { round: 0 });
    expect((await refused(client.callPrepared('getPlan', { ...req, meta: { ...req.meta!, signature: Buffer.alloc(64, 1) } }))).reason).toBe('bad-signature');
    expect((await refused(client.callPrepared('getPlan', { ...req, meta: null }))).reason).toBe('no-meta');
    await client.callPrepared('getPlan', req).catch(() => undefined); // first use (a stranger: unknown-peer)
    expect((await refused(client.callPrepared('getPlan', req))).reason).toBe('replayed');
    const big = await refused(client.call('join', { dataAddress: '127.0.0.1:1', agent: 'x'.repeat(MAX_MESSAGE_BYTES + 10) }));
    expect(big.status).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // A hash report for a round the stranger is not in (after joining, so it is a member of nothing).
    await client.call('join', { dataAddress: '127.0.0.1:9', manifestSha256: '', agent: 'stranger' }).catch((e: unknown) => e);
    const notIn = await refused(client.call('reportRound', { id: { round: before, attempt: 0 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: 'ab'.repeat(32) }));
    expect([grpc.status.PERMISSION_DENIED, grpc.status.NOT_FOUND, grpc.status.FAILED_PRECONDITION]).toContain(notIn.status);
    const upload = await refused(client.call('pushUpdate', { id: { round: before + 1, attempt: 0 }, offset: 0, totalBytes: 4, sha256: 'ab'.repeat(32), data: Buffer.alloc(4) }));
    expect([grpc.status.PERMISSION_DENIED, grpc.status.FAILED_PRECONDITION, grpc.status.INVALID_ARGUMENT]).toContain(upload.status);
    // The run goes on with its three members.
    const next = await committed(before + 1);
    const members = swarm.committedRounds().find((r) => r.round === next.round)!.members;
    expect(members).not.toContain(stranger.peerId);
  } finally {
    wrongRun.close();
    client.close();
  }
});

test('a worker SIGKILLed in a round: the ring is re-planned and the survivors commit', async () => {
  const from = swarm.child('w1').lines.length;
  // w2 dies at the start of its inner steps, while w1 and w3 go on into the all-reduce and wait for it there.
  const start = await swarm.waitFor('w2', (l) => l.event === 'round.start', 60_000, swarm.child('w2').lines.length);
  await swarm.kill('w2', 'SIGKILL');
  const round = start.round as number;
  const commit = await swarm.waitFor('w1', (l) => l.event === 'round.commit' && (l.round as number) >= round, 90_000, from);
  expect(commit.members).toBe(2);
  await committed(commit.round as number);
  const entry = swarm.committedRounds().find((r) => r.round === commit.round)!;
  expect(entry.members.length).toBe(2);
  expect(await memberHashes(entry)).toEqual(new Set([entry.thetaSha256]));
  expect(hashes.get(entry.round)!.get('w3')).toBe(entry.thetaSha256);
  // The coordinator took w2 out of the round: re-planned without it, or dropped it for silence first.
  const w2 = peerIds.get('w2')![0];
  const out = swarm.child('coordinator').lines.some(
    (l) => (l.event === 'round.replan' && (l.removed as string[]).includes(w2)) || (l.event === 'member.drop' && l.peerId === w2),
  );
  expect(out).toBe(true);
});

test('a worker with --device cuda: exit 2 naming the flag without a GPU; with one, Δ stays on the GPU and its θ hash matches the CPU members\'', async () => {
  const name = swarm.startWorker(undefined, { args: ['--device', 'cuda'] });
  if (!haveCudaDevice()) {
    const exit = await swarm.child(name).exited;
    expect(exit.code).toBe(2);
    expect(swarm.child(name).lines.map((l) => String(l.text ?? l.message ?? '')).join('\n')).toMatch(/--device cuda: .*(no CUDA|device)/i);
    return;
  }
  const engine = await swarm.waitFor(name, (l) => l.event === 'worker.engine', 60_000);
  expect(engine).toMatchObject({ device: 'cuda', deltaCompression: 'engine' });
  const commit = await swarm.waitFor(name, (l) => l.event === 'round.commit', 120_000);
  const other = await swarm.waitFor('w1', (l) => l.event === 'round.commit' && l.round === commit.round, 120_000);
  expect(commit.thetaSha256).toBe(other.thetaSha256);
  await swarm.kill(name, 'SIGTERM');
});

test('a new worker joins mid-run, syncs, and its hash matches after its first round', async () => {
  const name = swarm.startWorker(); // w4
  const first = await swarm.waitFor(name, (l) => l.event === 'round.commit', 120_000);
  const r = first.round as number;
  await committed(r);
  const entry = swarm.committedRounds().find((e) => e.round === r)!;
  expect(first.thetaSha256).toBe(entry.thetaSha256);
  expect(await memberHashes(entry)).toEqual(new Set([entry.thetaSha256]));
  expect(swarm.child(name).lines.some((l) => l.event === 'state.resync')).toBe(true);
});

test('the coordinator restarts mid-run and the run continues without losing a committed round', async () => {
  const saved = lastSavedRound();
  const code = await swarm.kill('coordinator', 'SIGKILL');
  expect(code.signal).toBe('SIGKILL');
  await swarm.startCoordinator();
  const restarted = swarm.child('coordinator').lines.find((l) => l.event === 'state.load')!;
  expect(restarted.round as number).toBeGreaterThanOrEqual(saved);
  const next = await committed(saved + 1, 120_000);
  const rounds = swarm.committedRounds().map((e) => e.round);
  expect(rounds.filter((r) => r === next.round).length).toBe(1);
  expect([...rounds].sort((a, b) => a - b)).toEqual(rounds);
  // The members agree with the new commit.
  const entry = swarm.committedRounds().find((e) => e.round === next.round)!;
  expect(await memberHashes(entry)).toEqual(new Set([entry.thetaSha256]));
});

test('SIGTERM: a worker leaves gracefully and exits 0; restarted on its state directory it is the same peer', async () => {
  const before = peerIds.get('w1')![0];
  const t0 = Date.now();
  const exit = await swarm.kill('w1', 'SIGTERM');
  expect(exit.code).toBe(0);
  expect(Date.now() - t0).toBeLessThan(60_000);
  await swarm.waitFor('coordinator', (l) => l.event === 'member.leave' && l.peerId === before, 30_000);
  swarm.startWorker('w1');
  const join = await swarm.waitFor('w1', (l) => l.event === 'worker.join', 60_000, swarm.child('w1').lines.length);
  expect(join.peerId).toBe(before);
  const commit = await swarm.waitFor('w1', (l) => l.event === 'round.commit', 120_000);
  await committed(commit.round as number);
  expect(swarm.committedRounds().find((e) => e.round === commit.round)!.thetaSha256).toBe(commit.thetaSha256);
});

test('the ledger verifies, credits equal verified tokens, and a worker keeps its own signed entries', async () => {
  const file = path.join(swarm.coordinatorState, 'ledger.jsonl');
  const verify = spawnSync(process.execPath, [CLI_MAIN, 'ledger', 'verify', file], { encoding: 'utf8' });
  expect(verify.stderr).toBe('');
  expect(verify.status).toBe(0);
  const { entries } = await readLedgerFile(file);
  const commits = entries.filter((e) => e.type === 'commit').map((e) => e.body as unknown as CommitBody);
  expect(commits.map((c) => c.round)).toEqual(swarm.committedRounds().map((r) => r.round).filter((r) => commits.some((c) => c.round === r)));
  // Credits = verified tokens × quality score; honest members are verified, and their score is mostly 1.
  const perRound = 12 * 4 * 64;
  const earned = new Map<string, number>();
  let scores = 0;
  let full = 0;
  for (const c of commits) {
    for (const m of c.members) {
      if (m.verdict === 'verified') {
        expect(m.tokens).toBe(perRound);
        expect(m.credits).toBe(Math.round(m.tokens * m.score));
        scores++;
        if (m.score === 1) full++;
      } else {
        expect(m.credits).toBe(0);
      }
      earned.set(m.peerId, (earned.get(m.peerId) ?? 0) + m.credits);
    }
  }
  expect(full / scores).toBeGreaterThan(0.5);
  // Every hop's two ends reported the same traffic.
  for (const e of entries.filter((x) => x.type === 'commit')) expect(e.body.badHops).toBeUndefined();
  // Nobody here cheats: nobody is excluded (an unlucky honest round can cost that round's credit, a strike).
  const excluded = swarm.child('coordinator').lines.filter((l) => (l.event === 'trust.failed' && l.excludedUntilRound !== undefined) || l.event === 'trust.commit-refused');
  expect(excluded).toEqual([]);
  for (const b of ledgerBalances(entries)) expect(b.credits).toBe(earned.get(b.peerId));
  expect(entries.filter((e) => e.type === 'join').length).toBeGreaterThanOrEqual(4);
  // w3 was never restarted: its copy holds genesis and commits it took part in, each signed by the coordinator.
  const copy = (await readLedgerFile(path.join(swarm.o.dir, 'w3', 'ledger.jsonl'))).entries;
  const key = Buffer.from(String(entries[0].body.coordinatorPublicKey), 'base64');
  expect(copy[0].type).toBe('genesis');
  expect(copy.filter((e) => e.type === 'commit').length).toBeGreaterThan(2);
  for (const e of copy) expect(entryProblem(e, key)).toBeUndefined();
});

// Hostile members, one at a time, in a swarm of 3 honest workers and 1 cheat (the test-only switch
// COVENANT_TEST_HOSTILE): a zero Δ, training on random tokens, a scaled-up Δ, a replayed older Δ. Each must be
// caught within 2 rounds of its first, earn nothing from then on, sit out the following rounds, while the
// honest members keep identical θ hashes and the ledger verifies.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { prepareData } from '../src/data/prepare';
import { hostileKind, HOSTILE_KINDS } from '../src/diloco/hostile';
import { CommitBody } from '../src/ledger/entry';
import { readLedgerFile } from '../src/ledger/ledger';
import { CLI_MAIN, LocalSwarm, LogLine, localRunConfig } from '../src/swarm/local-swarm';

jest.setTimeout(240_000);

let tmp: string;
let dataDir: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-hostile-'));
  dataDir = path.join(tmp, 'data');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir });
});

afterAll(() => {
  if (!process.env.COVENANT_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the switch is refused in production and names the kinds', () => {
  expect(hostileKind({})).toBeUndefined();
  expect(hostileKind({ COVENANT_TEST_HOSTILE: 'zero' })).toBe('zero');
  expect(() => hostileKind({ COVENANT_TEST_HOSTILE: 'zero', NODE_ENV: 'production' })).toThrow(/refused in production/);
  expect(() => hostileKind({ COVENANT_TEST_HOSTILE: 'nope' })).toThrow(/zero, random-tokens, scaled, replay, ring-mismatch, scale-lie, inflated/);
  // The worker exits 2 (a refusal a restart cannot fix) before joining anything.
  const r = spawnSync(process.execPath, [CLI_MAIN, 'worker', '--join', '127.0.0.1:1', '--run-id', 'x', '--data', dataDir, '--state', path.join(tmp, 'prod'), '--listen', '127.0.0.1:0'], {
    env: { ...process.env, COVENANT_TEST_HOSTILE: 'zero', NODE_ENV: 'production' },
    encoding: 'utf8',
  });
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/refused in production/);
});

describe.each(HOSTILE_KINDS.map((k) => [k]))('a %s member', (kind) => {
  let swarm: LocalSwarm;
  const hashes = new Map<number, Map<string, string>>();
  afterAll(async () => swarm?.stop(10_000));

  test('is caught within 2 rounds, earns nothing, is excluded; the honest members agree', async () => {
    swarm = new LocalSwarm({
      dir: path.join(tmp, kind),
      dataDir,
      config: localRunConfig({ model: 'tiny', vocabSize: 257, innerSteps: 12, innerLr: 1e-3, minMembers: 3, planDelayMs: 1500, heartbeatTimeoutMs: 3000, allreduceTimeoutMs: 3000, penaltyRounds: 100 }),
      workerArgs: ['--eval-every', '0'],
      onLine: (name: string, l: LogLine) => {
        if (l.event !== 'round.commit' || l.role !== 'worker') return;
        if (!hashes.has(l.round as number)) hashes.set(l.round as number, new Map());
        hashes.get(l.round as number)!.set(name, l.thetaSha256 as string);
      },
    });
    await swarm.startCoordinator();
    for (let i = 0; i < 3; i++) swarm.startWorker();
    const cheat = swarm.startWorker('cheat', { env: { COVENANT_TEST_HOSTILE: kind } });
    const joined = await swarm.waitFor(cheat, (l) => l.event === 'worker.join', 60_000);
    const cheatId = joined.peerId as string;
    const first = await swarm.waitFor(cheat, (l) => l.event === 'round.start', 60_000);
    const isCheat = (l: LogLine) => (l.event === 'trust.failed' || l.event === 'trust.commit-refused') && l.peerId === cheatId;
    const caught = await swarm.waitFor('coordinator', isCheat, 120_000);
    expect(caught.round as number).toBeLessThanOrEqual((first.round as number) + 1);
    // Excluded at once on a proof (the commit-time checks), on a second strike of the statistical check.
    const excluded = await swarm.waitFor('coordinator', (l) => isCheat(l) && l.excludedUntilRound !== undefined, 120_000);
    const x = excluded.round as number;
    expect(x).toBeLessThanOrEqual((first.round as number) + 3);
    // Checks run after a commit, so the round after x may already be planned (with the cheat) when the verdict lands.
    await swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && (l.round as number) >= x + 3, 120_000);
    await new Promise((r) => setTimeout(r, 1500)); // a round's ledger entry follows its checks

    const file = path.join(swarm.coordinatorState, 'ledger.jsonl');
    const verify = spawnSync(process.execPath, [CLI_MAIN, 'ledger', 'verify', file], { encoding: 'utf8' });
    expect(verify.stderr).toBe('');
    const entries = (await readLedgerFile(file)).entries;
    const commits = entries.filter((e) => e.type === 'commit').map((e) => e.body as unknown as CommitBody);
    // The failure is on record: in the round's commit entry, or in its abandon entry when the round did not commit.
    const at = commits.find((c) => c.round === (caught.round as number));
    if (at) expect(at.members.find((m) => m.peerId === cheatId)).toMatchObject({ verdict: 'failed', credits: 0 });
    if (kind === 'ring-mismatch') {
      // The ring audit named the cheat from its opened traffic; the round's average is not credited to anyone.
      const entry = entries.find((e) => e.type === 'commit' && e.body.round === caught.round)!;
      expect(entry.body.ringAudit).toMatchObject({ ok: false });
      expect(new Set((entry.body.ringAudit as { blamed: Array<{ peerId: string }> }).blamed.map((b) => b.peerId))).toEqual(new Set([cheatId]));
      for (const m of at!.members) expect(m.credits).toBe(0);
    }
    if (!at) {
      const abandoned = entries.find((e) => e.type === 'abandon' && e.body.round === caught.round)!;
      expect((abandoned.body.failed as Array<{ peerId: string }>).map((f) => f.peerId)).toContain(cheatId);
    }
    for (const c of commits.filter((c) => c.round > x + 1)) {
      expect(c.members.map((m) => m.peerId)).not.toContain(cheatId); // excluded
      expect(c.members.length).toBe(3); // the three honest members
    }
    // A round decided after the exclusion never has the cheat, even one planned with it before the verdict
    // landed (that attempt is re-planned without it).
    const coordLines = swarm.child('coordinator').lines;
    const at0 = coordLines.indexOf(excluded);
    const decidedAfter = new Set(coordLines.slice(at0).filter((l) => l.event === 'round.commit').map((l) => l.round as number));
    for (const c of commits.filter((y) => decidedAfter.has(y.round))) expect(c.ring).not.toContain(cheatId);
    // No honest member was excluded (one unlucky round may cost an honest member that round's credit: a strike).
    const exclusions = swarm.child('coordinator').lines.filter((l) => (l.event === 'trust.failed' && l.excludedUntilRound !== undefined) || l.event === 'trust.commit-refused');
    expect(new Set(exclusions.map((l) => l.peerId))).toEqual(new Set([cheatId]));
    for (const c of commits.filter((c) => c.round >= (caught.round as number))) {
      const m = c.members.find((y) => y.peerId === cheatId);
      if (m) expect(m.credits).toBe(0);
    }
    // The honest members hold identical θ after every round they committed, equal to the ledger's.
    for (const c of commits) {
      const byWorker = hashes.get(c.round);
      if (!byWorker) continue;
      for (const [name, h] of byWorker) if (name !== 'cheat') expect(h).toBe(c.thetaSha256);
    }
  });
});

test('an inflated member (Δ × 4, inside the norm check) is clipped to the bound: the ring audit replays its clipped share', async () => {
  const swarm = new LocalSwarm({
    dir: path.join(tmp, 'inflated'),
    dataDir,
    config: localRunConfig({ model: 'tiny', vocabSize: 257, innerSteps: 12, innerLr: 1e-3, minMembers: 4, planDelayMs: 1500, heartbeatTimeoutMs: 3000, allreduceTimeoutMs: 3000 }),
    workerArgs: ['--eval-every', '0'],
  });
  try {
    await swarm.startCoordinator();
    for (let i = 0; i < 3; i++) swarm.startWorker();
    const big = swarm.startWorker('inflated', { env: { COVENANT_TEST_HOSTILE: 'inflated' } });
    const joined = await swarm.waitFor(big, (l) => l.event === 'worker.join', 60_000);
    const clipped = await swarm.waitFor(big, (l) => l.event === 'trust.clipped', 120_000);
    // Its scale bound is about 4× the median, the clip bound 2× the median: about half of its Δ goes in.
    expect(clipped.factor as number).toBeGreaterThan(0.3);
    expect(clipped.factor as number).toBeLessThan(0.7);
    const audit = await swarm.waitFor('coordinator', (l) => (l.event === 'trust.ring-audit' || l.event === 'trust.ring-mismatch') && l.round === clipped.round, 120_000);
    expect(audit).toMatchObject({ event: 'trust.ring-audit', clipped: 1 });
    const lines = swarm.child('coordinator').lines;
    expect(lines.filter((l) => l.event === 'trust.scale-proof' || (l.event === 'trust.failed' && /ring-mismatch|scale-proof/.test(String(l.reason))))).toEqual([]);
    expect(lines.some((l) => l.event === 'trust.commit-refused' && l.peerId === joined.peerId)).toBe(false);
  } finally {
    await swarm.stop(10_000);
  }
});

// The credit ledger: hash-chained, coordinator-signed entries holding the members' own signed reports;
// `covenant ledger verify` names the index of any changed byte, removed entry or swapped signature.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { commitBody } from '../src/ledger/commit-entry';
import { LedgerEntry } from '../src/ledger/entry';
import { Ledger, readLedgerFile } from '../src/ledger/ledger';
import { entriesOf, ledgerBalances, verifyLedger } from '../src/ledger/verify';
import { PendingCommit } from '../src/swarm/commit-applier';
import { Identity } from '../src/swarm/identity';
import { coordinatorService, ReportRoundRequest } from '../src/swarm/proto';
import { signRequest } from '../src/swarm/signed-request';

const CLI = path.resolve(__dirname, '..', 'src', 'cli', 'main.js');
const H = (c: string) => c.repeat(64);
const cfg = { manifestSha256: H('e'), seed: 7, innerSteps: 10, batchSize: 4, seqLen: 64 };
const coordinator = Identity.generate();
const members = [Identity.generate(), Identity.generate(), Identity.generate()];

function report(who: Identity, round: number, theta: string, tokens: number): ReportRoundRequest {
  return signRequest(who, coordinatorService().methods.reportRound, { id: { round, attempt: 0 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: theta, tokens, meanLoss: 3 }, { runId: 'r1' });
}

async function build(dir: string): Promise<LedgerEntry[]> {
  const { ledger } = await Ledger.open(dir, coordinator, {
    runId: 'r1',
    coordinatorPeerId: coordinator.peerId,
    coordinatorPublicKey: coordinator.publicKey.toString('base64'),
    runConfigSha256: H('c'),
    round: 0,
    thetaSha256: H('0'),
  });
  for (const m of members) await ledger.append('join', { peerId: m.peerId, address: '127.0.0.1:1' });
  let prev = H('0');
  for (let round = 1; round <= 3; round++) {
    const theta = H(String(round));
    const c: PendingCommit = { round, attempt: 0, prevThetaSha256: prev, thetaSha256: theta, members: members.slice(0, 2).map((m) => m.peerId), resync: [members[2].peerId], ring: members.map((m) => m.peerId), plannedAtMs: 0, committedAtMs: 0 };
    const reports = new Map(members.map((m, i) => [m.peerId, report(m, round, i < 2 ? theta : H('f'), 1000 + i)]));
    await ledger.append('commit', commitBody(c, reports, cfg) as unknown as Record<string, unknown>);
    prev = theta;
  }
  await ledger.append('leave', { peerId: members[0].peerId, reason: 'SIGTERM' });
  await ledger.close();
  return (await readLedgerFile(path.join(dir, 'ledger.jsonl'))).entries;
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-ledger-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('an honest ledger verifies; credits are verified tokens; a member keeps its own entries', async () => {
  const entries = await build(tmp);
  expect(entries.map((e) => e.type)).toEqual(['genesis', 'join', 'join', 'join', 'commit', 'commit', 'commit', 'leave']);
  expect(verifyLedger(entries)).toMatchObject({ ok: true, entries: 8, rounds: 3, errors: [] });
  expect(verifyLedger(entries, coordinator.publicKey).ok).toBe(true);
  expect(verifyLedger(entries, Identity.generate().publicKey).ok).toBe(false); // pinned to another key
  const balances = new Map(ledgerBalances(entries).map((b) => [b.peerId, b]));
  expect(balances.get(members[0].peerId)).toMatchObject({ credits: 3000, tokens: 3000, rounds: 3, failed: 0 });
  expect(balances.get(members[1].peerId)).toMatchObject({ credits: 3003 });
  expect(balances.get(members[2].peerId)).toMatchObject({ credits: 0, rounds: 0 }); // resync: no credit
  const mine = entriesOf(entries, members[1].peerId);
  expect(mine.map((e) => e.type)).toEqual(['genesis', 'join', 'commit', 'commit', 'commit']);
  // Reopening continues the chain.
  const { ledger } = await Ledger.open(tmp, coordinator, { runId: 'r1' } as never);
  await ledger.append('drop', { peerId: members[2].peerId });
  await ledger.close();
  expect(verifyLedger((await readLedgerFile(path.join(tmp, 'ledger.jsonl'))).entries).ok).toBe(true);
});

test('tampering is found and named by entry index: a changed byte, a removed entry, swapped signatures, a forged report', async () => {
  const entries = await build(tmp);
  const clone = () => JSON.parse(JSON.stringify(entries)) as LedgerEntry[];
  const changed = clone();
  (changed[5].body as { members: Array<{ credits: number }> }).members[0].credits += 1;
  expect(verifyLedger(changed).errors[0]).toMatchObject({ index: 5, what: expect.stringMatching(/hash mismatch/) });
  const removed = clone();
  removed.splice(3, 1);
  expect(verifyLedger(removed).errors[0].index).toBe(3);
  const swapped = clone();
  [swapped[1].signature, swapped[2].signature] = [swapped[2].signature, swapped[1].signature];
  expect(verifyLedger(swapped).errors.map((e) => e.index)).toEqual([1, 2]);
  // A coordinator that inflates a member's tokens must also forge the member's signature.
  const forged = clone();
  const m = (forged[6].body as { members: Array<{ tokens: number; credits: number }> }).members[0];
  m.tokens += 500;
  m.credits += 500;
  const report = verifyLedger(forged);
  expect(report.errors.some((e) => e.index === 6 && /signed 1000/.test(e.what))).toBe(true);

  // The CLI: verify exits 1 naming the index; balances and show print.
  const file = path.join(tmp, 'tampered.jsonl');
  fs.writeFileSync(file, changed.map((e) => `${JSON.stringify(e)}\n`).join(''));
  const bad = spawnSync(process.execPath, [CLI, 'ledger', 'verify', file], { encoding: 'utf8' });
  expect(bad.status).toBe(1);
  expect(bad.stderr).toMatch(/entry 5: hash mismatch/);
  const good = spawnSync(process.execPath, [CLI, 'ledger', 'verify', path.join(tmp, 'ledger.jsonl')], { encoding: 'utf8' });
  expect(good.status).toBe(0);
  expect(good.stdout).toMatch(/8 entries, 3 committed round\(s\)/);
  const bal = spawnSync(process.execPath, [CLI, 'ledger', 'balances', path.join(tmp, 'ledger.jsonl')], { encoding: 'utf8' });
  expect(bal.stdout).toContain(members[1].peerId);
  expect(bal.stdout).toMatch(/3003/);
  const show = spawnSync(process.execPath, [CLI, 'ledger', 'show', path.join(tmp, 'ledger.jsonl')], { encoding: 'utf8' });
  expect(show.stdout.trim().split('\n')).toHaveLength(8);
  expect(show.stdout).toMatch(/commit {3}round 2 attempt 0/);
});

test('a coordinator refuses a ledger that does not verify, or one signed by another key', async () => {
  await build(tmp);
  const file = path.join(tmp, 'ledger.jsonl');
  const genesis = { runId: 'r1' } as never;
  await expect(Ledger.open(tmp, Identity.generate(), genesis)).rejects.toThrow(/signed by coordinator/);
  const text = fs.readFileSync(file, 'utf8').replace('"SIGTERM"', '"SIGKILL"');
  fs.writeFileSync(file, text);
  await expect(Ledger.open(tmp, coordinator, genesis)).rejects.toThrow(/entry 7: hash mismatch/);
});

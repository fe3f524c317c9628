// The validator role given to a member: the coordinator's queue of delegated checks (FetchCheck/SubmitCheck),
// the verifier's choice of checker and its fallbacks, and the ledger's audit of a check a validator member ran.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { commitBody, MemberCheck } from '../src/ledger/commit-entry';
import { LedgerEntry } from '../src/ledger/entry';
import { Ledger, readLedgerFile } from '../src/ledger/ledger';
import { verifyLedger } from '../src/ledger/verify';
import { Logger } from '../src/log';
import { RoundPlanner } from '../src/swarm/round-planner';
import { Identity } from '../src/swarm/identity';
import { CheckChunk, coordinatorService, STATE_CHUNK_BYTES, SubmitCheckRequest } from '../src/swarm/proto';
import { RpcError } from '../src/swarm/rpc-error';
import { signRequest } from '../src/swarm/signed-request';
import { CheckDelegation, DelegatedOutcome } from '../src/trust/check-delegation';
import { CommitmentBook } from '../src/trust/commitments';
import { AUDIT_TOLERANCE, lossDisagreement, RoundVerifier } from '../src/trust/round-verifier';

const H = (c: string) => c.repeat(64);
const validator = Identity.generate();
const member = Identity.generate();
const quiet = new Logger({ stream: { write: () => true } });

function submission(who: Identity, body: Partial<Omit<SubmitCheckRequest, 'meta'>>): SubmitCheckRequest {
  return signRequest(who, coordinatorService().methods.submitCheck, { round: 3, peerId: member.peerId, deltaSha256: H('d'), prevThetaSha256: H('2'), ...body }, { runId: 'r1' }) as SubmitCheckRequest;
}

async function collect(gen: AsyncGenerator<CheckChunk>): Promise<CheckChunk[]> {
  const out: CheckChunk[] = [];
  for await (const c of gen) out.push(c);
  return out;
}

describe('CheckDelegation', () => {
  const losses = { assignedBefore: [5, 5], assignedAfter: [4, 4.5], controlBefore: [5, 5], controlAfter: [4.8, 4.9] };
  const assign = (q: CheckDelegation, payload = Buffer.alloc(16, 7)) =>
    q.assign({ round: 3, peerId: member.peerId, validator: validator.peerId, prevThetaSha256: H('2'), deltaSha256: H('d'), payload, batches: 2 });

  test('a task streams to its validator in chunks, comes again until answered, and its losses give the result', async () => {
    const q = new CheckDelegation();
    const payload = Buffer.alloc(STATE_CHUNK_BYTES + 100, 3);
    const outcome = assign(q, payload);
    expect(q.waiting(validator.peerId)).toBe(1);
    expect(q.waiting(member.peerId)).toBe(0);
    expect(await collect(q.fetch(member.peerId))).toEqual([]); // someone else's task
    const chunks = await collect(q.fetch(validator.peerId));
    expect(chunks.map((c) => [c.offset, c.data.length])).toEqual([[0, STATE_CHUNK_BYTES], [STATE_CHUNK_BYTES, 100]]);
    expect(chunks[0].task).toMatchObject({ round: 3, peerId: member.peerId, prevThetaSha256: H('2'), deltaSha256: H('d'), totalBytes: payload.length, batches: 2 });
    expect(chunks[1].task).toBeNull();
    expect(q.waiting(validator.peerId)).toBe(0);
    // A stream that broke: the same task again.
    expect((await collect(q.fetch(validator.peerId)))[0].task?.peerId).toBe(member.peerId);

    expect(() => q.submit(validator.peerId, submission(validator, { ...losses, deltaSha256: H('e') }))).toThrow(expect.objectContaining({ reason: 'check-mismatch' }));
    expect(() => q.submit(validator.peerId, submission(validator, { ...losses, assignedAfter: [4] }))).toThrow(/assignedAfter holds 1 losses, the check has 2 batches/);
    expect(() => q.submit(validator.peerId, submission(validator, { ...losses, controlAfter: [4, NaN] }))).toThrow(/controlAfter\[1\] = NaN is not a loss/);
    expect(() => q.submit(validator.peerId, submission(validator, { ...losses, controlAfter: [4, -1] }))).toThrow(RpcError);
    expect(q.submit(member.peerId, submission(member, losses))).toEqual({ accepted: false }); // not its task

    expect(q.submit(validator.peerId, submission(validator, losses))).toEqual({ accepted: true });
    const o = (await outcome) as Extract<DelegatedOutcome, { kind: 'measured' }>;
    expect(o.kind).toBe('measured');
    expect(o.result.gainAssigned).toBeCloseTo(0.75, 12);
    expect(o.result.gainControl).toBeCloseTo(0.15, 12);
    expect(o.result.advantages.map((x) => +x.toFixed(9))).toEqual([0.8, 0.4]);
    expect(o.record.method).toBe('/covenant.v1.Coordinator/SubmitCheck');
    expect(q.submit(validator.peerId, submission(validator, losses))).toEqual({ accepted: false }); // answered already
  });

  test('a decline and a cancel settle the task as declined with the reason', async () => {
    const q = new CheckDelegation();
    const a = assign(q);
    expect(q.submit(validator.peerId, submission(validator, { declined: true, reason: 'θ not held here' }))).toEqual({ accepted: true });
    expect(await a).toEqual({ kind: 'declined', validator: validator.peerId, reason: 'θ not held here' });
    const b = assign(q);
    q.cancel(3, member.peerId, 'no answer within 10 ms');
    expect(await b).toMatchObject({ kind: 'declined', reason: 'no answer within 10 ms' });
    expect(q.waiting(validator.peerId)).toBe(0);
  });
});

describe('RoundVerifier with validator members', () => {
  const ids = [validator, member, Identity.generate(), Identity.generate()];
  const n = 64;
  const blockSize = 16;
  function setup(o: { validators: string[]; timeoutMs?: number }) {
    const planner = new RoundPlanner({ seed: 1, members: () => ids.map((i, k) => ({ peerId: i.peerId, address: `127.0.0.1:${7000 + k}` })), minMembers: 2, maxAttempts: 4, planDelayMs: 0, roundDeadlineMs: 60_000 });
    const book = new CommitmentBook({ planner, numBlocks: n / blockSize, numParams: n, blockSize, tokensPerRound: 100, normFactor: 6, clipFactor: 0, penaltyRounds: 5, logger: quiet });
    const delegation = new CheckDelegation();
    const verifier = new RoundVerifier({ book, runSeed: 1, innerSteps: 4, B: 1, T: 8, shardsPerRound: 0, numParams: n, blockSize, sample: 0, batches: 2, timeoutMs: o.timeoutMs ?? 5000, logger: quiet, validators: o.validators, delegation });
    return { verifier, delegation };
  }

  test('every member but the validator is sampled and assigned to it; nobody is assigned to check itself', async () => {
    const { verifier, delegation } = setup({ validators: [validator.peerId] });
    expect(verifier.checksLocally).toBe(false);
    expect(verifier.checksWork).toBe(true);
    verifier.begin(3, ids.map((i) => i.peerId), H('3'), H('2'));
    expect(verifier.wantsDelta(validator.peerId, 3)).toBe(false); // no other checker for it
    for (const i of ids.slice(1)) expect(verifier.wantsDelta(i.peerId, 3)).toBe(true);
    expect(delegation.waiting(validator.peerId)).toBe(0); // nothing until a Δ is in
    await verifier.close();
  });

  test('a validator that is not a member of the round gets nothing; without validators and data nothing is checked', async () => {
    const a = setup({ validators: [validator.peerId] });
    a.verifier.begin(3, ids.slice(1).map((i) => i.peerId), H('3'), H('2'));
    expect(ids.slice(1).some((i) => a.verifier.wantsDelta(i.peerId, 3))).toBe(false);
    const b = setup({ validators: [] });
    expect(b.verifier.checksWork).toBe(false);
    await a.verifier.close();
    await b.verifier.close();
  });
});

describe('the ledger audits a delegated check', () => {
  const cfg = { manifestSha256: H('e'), seed: 7, innerSteps: 10, batchSize: 4, seqLen: 64 };
  const coordinator = Identity.generate();
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-validator-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function ledgerWith(check: (c: MemberCheck) => MemberCheck): Promise<LedgerEntry[]> {
    const { ledger } = await Ledger.open(tmp, coordinator, { runId: 'r1', coordinatorPeerId: coordinator.peerId, coordinatorPublicKey: coordinator.publicKey.toString('base64'), runConfigSha256: H('c'), round: 2, thetaSha256: H('2') });
    const report = signRequest(member, coordinatorService().methods.reportRound, { id: { round: 3, attempt: 0 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: H('3'), tokens: 2560, meanLoss: 3 }, { runId: 'r1' });
    const q = new CheckDelegation();
    const measured = q.assign({ round: 3, peerId: member.peerId, validator: validator.peerId, prevThetaSha256: H('2'), deltaSha256: H('d'), payload: Buffer.alloc(4), batches: 2 });
    q.submit(validator.peerId, submission(validator, { assignedBefore: [5, 5], assignedAfter: [4, 4.5], controlBefore: [5, 5], controlAfter: [4.8, 4.9] }));
    const o = (await measured) as Extract<DelegatedOutcome, { kind: 'measured' }>;
    const honest: MemberCheck = { ok: true, score: 1, gainAssigned: o.result.gainAssigned, gainControl: o.result.gainControl, checkedBy: validator.peerId, check: o.record };
    const c = { round: 3, attempt: 0, prevThetaSha256: H('2'), thetaSha256: H('3'), members: [member.peerId], resync: [], ring: [member.peerId], plannedAtMs: 0, committedAtMs: 0 };
    await ledger.append('commit', commitBody(c, new Map([[member.peerId, report]]), cfg, new Map([[member.peerId, check(honest)]])) as unknown as Record<string, unknown>);
    await ledger.close();
    return (await readLedgerFile(path.join(tmp, 'ledger.jsonl'))).entries;
  }

  test('the validator\'s signed losses back the recorded gains', async () => {
    const entries = await ledgerWith((c) => c);
    const m = (entries[1].body.members as Array<{ usefulWork: { checkedBy: string } }>)[0];
    expect(m.usefulWork.checkedBy).toBe(validator.peerId);
    expect(verifyLedger(entries)).toMatchObject({ ok: true, errors: [] });
  });

  test('gains that are not the signed losses\', a check by the member itself, or another signer fail verify', async () => {
    const bent = await ledgerWith((c) => ({ ...c, gainAssigned: (c.gainAssigned ?? 0) + 0.5 }));
    expect(verifyLedger(bent).errors).toEqual([{ index: 1, what: expect.stringMatching(/recorded gains .* are not the signed losses/) }]);
    fs.rmSync(path.join(tmp, 'ledger.jsonl'));
    const self = await ledgerWith((c) => ({ ...c, checkedBy: member.peerId }));
    expect(verifyLedger(self).errors[0].what).toMatch(/the member checked itself/);
    fs.rmSync(path.join(tmp, 'ledger.jsonl'));
    const other = await ledgerWith((c) => ({ ...c, checkedBy: Identity.generate().peerId }));
    expect(verifyLedger(other).errors[0].what).toMatch(/validator [0-9a-f]+: the signed check is from/);
  });
});

test('an audit compares every loss relative to its size; a shape that differs never agrees', () => {
  const a = { assignedBefore: [5, 5], assignedAfter: [4, 4.5], controlBefore: [5, 5], controlAfter: [4.8, 4.9] };
  expect(lossDisagreement(a, a)).toBe(0);
  const nudged = { ...a, controlAfter: [4.8, 4.9 * (1 + AUDIT_TOLERANCE / 2)] };
  expect(lossDisagreement(nudged, a)).toBeLessThanOrEqual(AUDIT_TOLERANCE);
  const lie = { ...a, assignedAfter: a.assignedBefore.map((l) => l + 0.01) };
  expect(lossDisagreement(lie, a)).toBeCloseTo(0.2525, 9); // |5.01 − 4| / 4
  expect(lossDisagreement({ ...a, assignedAfter: [4] }, a)).toBe(Infinity);
});

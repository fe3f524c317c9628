// The coordinator's side of a commit: a multi-chunk update upload, interleaved with heartbeats, is applied
// only when the outer step gives the committed hash; corrupt, mismatching, foreign and out-of-turn uploads
// are refused and leave the saved state as it was.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { outerStep } from '../src/diloco/outer-step';
import { Logger } from '../src/log';
import { CommitApplier, PendingCommit } from '../src/swarm/commit-applier';
import { GlobalState, loadGlobalState, makeGlobalState, saveGlobalState } from '../src/swarm/global-state';
import { PushUpdateRequest, STATE_CHUNK_BYTES } from '../src/swarm/proto';
import { RoundLog, readRoundLog } from '../src/swarm/round-log';
import { RpcError } from '../src/swarm/rpc-error';

const N = Math.floor((2.5 * STATE_CHUNK_BYTES) / 4); // three chunks
const OUTER = { lr: 0.7, momentum: 0.9 };
const quiet = new Logger({ stream: { write: () => true } as unknown as NodeJS.WritableStream });

function random(n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() - 0.5) * scale;
  return a;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function setup(now = () => Date.now()) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-applier-'));
  dirs.push(dir);
  let state: GlobalState = makeGlobalState(3, random(N, 1), random(N, 0.01));
  await saveGlobalState(dir, state);
  const { log } = await RoundLog.open(dir);
  const applier = new CommitApplier({ stateDir: dir, state: () => state, setState: (s) => (state = s), roundLog: log, outer: OUTER, logger: quiet, now, uploadStaleMs: 1000 });
  const delta = random(N, 0.001);
  const theta = Float32Array.from(state.theta);
  const momentum = Float32Array.from(state.momentum);
  outerStep(theta, momentum, delta, OUTER);
  const next = makeGlobalState(4, theta, momentum);
  const commit: PendingCommit = {
    round: 4,
    attempt: 1,
    prevThetaSha256: state.thetaHash,
    thetaSha256: next.thetaHash,
    members: ['p1', 'p2'],
    resync: [],
    ring: ['p2', 'p1', 'p3'],
    plannedAtMs: Date.now() - 1000,
    committedAtMs: Date.now(),
  };
  return { dir, log, applier, delta, next, commit, state: () => state };
}

function chunks(update: Float32Array, round = 4, sha?: string): PushUpdateRequest[] {
  const bytes = Buffer.from(update.buffer, update.byteOffset, update.byteLength);
  const sha256 = sha ?? crypto.createHash('sha256').update(bytes).digest('hex');
  const out: PushUpdateRequest[] = [];
  for (let off = 0; off < bytes.length; off += STATE_CHUNK_BYTES) {
    out.push({ meta: null, id: { round, attempt: 1 }, offset: off, totalBytes: bytes.length, sha256, data: bytes.subarray(off, off + STATE_CHUNK_BYTES) });
  }
  return out;
}

const refusal = async (p: Promise<unknown>) => ((await p.then(() => undefined, (e: unknown) => e)) as RpcError).reason;

test('a three-chunk upload with heartbeats in between is applied, saved and logged', async () => {
  const t = await setup();
  t.applier.recordReport('p1', { meta: null, id: { round: 4, attempt: 1 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: t.commit.thetaSha256, meanLoss: 2.5, tokens: 100, timings: null, bytesSent: 0, bytesReceived: 0, failure: null, transcriptSentSha256: '', transcriptReceivedSha256: '' });
  t.applier.commit(t.commit);
  expect(t.applier.wantUpload('p1', 4)).toBe(true);
  expect(t.applier.wantUpload('p2', 4)).toBe(false); // p1 is on it
  const parts = chunks(t.delta);
  expect(parts.length).toBe(3);
  expect(await t.applier.receive('p1', parts[0])).toMatchObject({ applied: false, receivedBytes: STATE_CHUNK_BYTES });
  // Heartbeats of the uploader and of another member during the upload change nothing.
  expect(t.applier.uploadWantedFrom('p1')).toBeUndefined();
  expect(t.applier.uploadWantedFrom('p2')).toBeUndefined();
  expect(await t.applier.receive('p1', parts[1])).toMatchObject({ applied: false });
  expect(await t.applier.receive('p1', parts[2])).toMatchObject({ applied: true, stateRound: 4 });
  expect(t.state().thetaHash).toBe(t.commit.thetaSha256);
  expect(t.applier.pendingRounds).toEqual([]);
  const saved = await loadGlobalState(t.dir);
  expect([saved!.round, saved!.thetaHash]).toEqual([4, t.commit.thetaSha256]);
  expect(Buffer.from(saved!.momentum.buffer).equals(Buffer.from(t.next.momentum.buffer))).toBe(true);
  await t.log.close();
  const entries = (await readRoundLog(path.join(t.dir, 'rounds.jsonl'))).entries;
  expect(entries).toMatchObject([{ round: 4, attempt: 1, members: ['p1', 'p2'], tokens: 100, meanLoss: 2.5, thetaSha256: t.commit.thetaSha256 }]);
  // A late repeat is answered as done.
  expect(await t.applier.receive('p2', parts[0])).toMatchObject({ applied: true, stateRound: 4 });
});

test('refused: foreign peer, bad size, corrupt payload, a Δ that does not give the committed hash, chunks out of order', async () => {
  const t = await setup();
  t.applier.commit(t.commit);
  const parts = chunks(t.delta);
  expect(await refusal(t.applier.receive('p3', parts[0]))).toBe('not-in-round'); // in the ring, but not a committed member
  expect(await refusal(t.applier.receive('p1', { ...parts[0], totalBytes: 8 }))).toBe('bad-size');
  expect(await refusal(t.applier.receive('p1', parts[1]))).toBe('bad-offset');
  expect(await refusal(t.applier.receive('p1', { ...parts[0], id: { round: 9, attempt: 0 } }))).toBe('no-pending-commit');
  // Corrupt: the bytes do not hash to the declared SHA-256.
  const bad = chunks(t.delta, 4, 'ab'.repeat(32));
  for (const c of bad.slice(0, 2)) await t.applier.receive('p1', c);
  expect(await refusal(t.applier.receive('p1', bad[2]))).toBe('update-corrupt');
  // Consistent bytes, wrong Δ: the outer step misses the committed hash.
  const wrong = Float32Array.from(t.delta);
  wrong[12345] += 1e-3;
  const w = chunks(wrong);
  for (const c of w.slice(0, 2)) await t.applier.receive('p2', c);
  expect(await refusal(t.applier.receive('p2', w[2]))).toBe('update-mismatch');
  expect(t.state().round).toBe(3);
  expect((await loadGlobalState(t.dir))!.round).toBe(3);
  // The right update from the other member still goes through.
  for (const c of parts.slice(0, 2)) await t.applier.receive('p1', c);
  expect(await t.applier.receive('p1', parts[2])).toMatchObject({ applied: true });
  await t.log.close();
});

test('an uploader that goes silent is replaced by the next committed member', async () => {
  let now = 1_000_000;
  const t = await setup(() => now);
  t.applier.commit(t.commit);
  expect(t.applier.uploadWantedFrom('p1')).toBe(4);
  expect(t.applier.uploadWantedFrom('p2')).toBeUndefined();
  now += 1500; // past uploadStaleMs
  expect(t.applier.uploadWantedFrom('p2')).toBe(4);
  await t.log.close();
});

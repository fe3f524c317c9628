// The pieces of verified work: Merkle commitments over a compressed Δ, its encoding, the commit-time checks
// (token claims, replays, norm outliers) and the useful-work verdict.
import * as grpc from '@grpc/grpc-js';
import { Logger } from '../src/log';
import { Identity } from '../src/swarm/identity';
import { coordinatorService, CommitRequest, ReportRoundRequest } from '../src/swarm/proto';
import { RoundPlanner } from '../src/swarm/round-planner';
import { signRequest } from '../src/swarm/signed-request';
import { CommitmentBook } from '../src/trust/commitments';
import { decodeDelta, deltaBlock, deltaLevels, deltaNorm, deltaRoot, encodeDelta } from '../src/trust/delta-blocks';
import { leafHash, merkleLevels, merklePath, merkleRoot, verifyMerklePath } from '../src/trust/merkle';
import { roundIsChecked, sampleMembers } from '../src/trust/round-verifier';
import { judgeUsefulWork } from '../src/trust/useful-work';
import { auditTranscripts } from '../src/trust/transcripts';
import { chunkOf, openingSample, reduceChunkBlock } from '../src/trust/ring-audit';
import { blameBlock } from '../src/trust/ring-blame';
import { applyClip, checkScales, clipFactor, scaleNormBound, scaleNormFloor, scalesSha256 } from '../src/trust/scale-bound';
import { ringLeafData, sendSteps, sentLeafCount, sentLeafIndex } from '../src/trust/ring-geometry';
import { ringOpenings } from '../src/trust/ring-openings';
import { allReduce, AllReduceResult, dequantize, quantize } from '../src/native';
import * as net from 'net';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

const quiet = new Logger({ stream: { write: () => true } });

function delta(n: number, block: number, seed = 1) {
  let x = seed;
  const codes = new Int8Array(n).map(() => ((x = (x * 1103515245 + 12345) % 2 ** 31), (x % 255) - 127));
  const scales = new Float32Array(Math.ceil(n / block)).map((_, i) => 0.001 * (i + 1));
  return { codes, scales, block };
}

test('Merkle paths open every leaf for every tree size, and nothing else', () => {
  for (const count of [1, 2, 3, 5, 8, 13]) {
    const blocks = Array.from({ length: count }, (_, i) => Buffer.from(`block ${i}`));
    const leaves = blocks.map(leafHash);
    const root = merkleRoot(leaves);
    const levels = merkleLevels(leaves);
    for (let i = 0; i < count; i++) {
      const path = merklePath(levels, i);
      expect(verifyMerklePath(root, blocks[i], i, count, path)).toBe(true);
      expect(verifyMerklePath(root, Buffer.from('forged'), i, count, path)).toBe(false);
      if (count > 1) expect(verifyMerklePath(root, blocks[i], (i + 1) % count, count, path)).toBe(false);
    }
  }
});

test('a compressed Δ: blocks, root, norm, and an encoding that round-trips and refuses bad input', () => {
  const d = delta(1000, 128);
  expect(deltaBlock(d, 7).length).toBe(4 + 1000 - 7 * 128);
  const levels = deltaLevels(d);
  const root = deltaRoot(d);
  expect(verifyMerklePath(root, deltaBlock(d, 3), 3, 8, merklePath(levels, 3))).toBe(true);
  let s = 0;
  for (let i = 0; i < 1000; i++) s += (d.codes[i] * d.scales[Math.floor(i / 128)]) ** 2;
  expect(deltaNorm(d)).toBeCloseTo(Math.sqrt(s), 10);
  const back = decodeDelta(encodeDelta(d), 1000, 128);
  expect(deltaRoot(back)).toBe(root);
  expect(() => decodeDelta(encodeDelta(d).subarray(1), 1000, 128)).toThrow(/not 1031/);
  const bad = encodeDelta(d);
  bad.writeFloatLE(NaN, 0);
  expect(() => decodeDelta(bad, 1000, 128)).toThrow(/scale 0/);
  const changed = delta(1000, 128);
  changed.codes[999] ^= 1;
  expect(deltaRoot(changed)).not.toBe(root);
});

// A book over 8 blocks of 16 (128 parameters). Every member's 8 scales equal s = bound / (127·√128), so its
// scale bound U is `bound` and its norm floor L = bound·√8/√128 = bound / 4.
function bookFixture(seed = 1) {
  const ids = [Identity.generate(), Identity.generate(), Identity.generate(), Identity.generate()];
  const planner = new RoundPlanner({ seed, members: () => ids.map((i, k) => ({ peerId: i.peerId, address: `127.0.0.1:${7000 + k}` })), minMembers: 2, maxAttempts: 4, planDelayMs: 0, roundDeadlineMs: 60_000 });
  const book = new CommitmentBook({ planner, numBlocks: 8, numParams: 128, blockSize: 16, tokensPerRound: 100, normFactor: 6, clipFactor: 2, penaltyRounds: 5, logger: quiet });
  const scalesOf = (bound: number) => new Float32Array(8).fill(bound / (127 * Math.sqrt(128)));
  const pushScales = (who: Identity, attempt: number, scales: Float32Array, offset = 0) =>
    book.receiveScales(who.peerId, { meta: null, id: { round: 1, attempt }, scales: Buffer.from(scales.buffer, scales.byteOffset, scales.byteLength), offset });
  // Commits a norm with scales whose bound is `bound` (default 2 × the norm), sending the scales first.
  const commit = (who: Identity, attempt: number, root: string, norm: number, o: { tokens?: number; bound?: number; claimBound?: number; push?: boolean } = {}) => {
    const scales = scalesOf(o.bound ?? 2 * norm);
    if (o.push !== false) pushScales(who, attempt, scales);
    const req = signRequest(
      who,
      coordinatorService().methods.commit,
      { id: { round: 1, attempt }, merkleRoot: root, deltaNorm: norm, tokens: o.tokens ?? 100, meanLoss: 3, numBlocks: 8, scalesSha256: scalesSha256(scales), scaleNorm: o.claimBound ?? scaleNormBound(scales, 128, 16) },
      { runId: 'r' },
    ) as CommitRequest;
    return book.commit(who.peerId, req);
  };
  planner.tick();
  return { ids, planner, book, commit, pushScales, scalesOf };
}

test('commit-time checks: token claims, replays and norm outliers are refused; the others get GO after a re-plan', () => {
  const { ids, planner, book, commit } = bookFixture();
  expect(commit(ids[0], 0, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  expect(commit(ids[1], 0, 'b'.repeat(64), 1.2, { tokens: 1000 })).toMatchObject({ status: 'COMMIT_STATUS_REFUSED', reason: expect.stringMatching(/claims 1000 tokens/) });
  // ids[1] is out: attempt 1 has the other three.
  expect(planner.attempt).toBe(1);
  expect(commit(ids[0], 0, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_REPLAN' });
  expect(commit(ids[0], 1, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  expect(commit(ids[2], 1, 'c'.repeat(64), 1.1)).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  expect(commit(ids[3], 1, 'd'.repeat(64), 50)).toMatchObject({ status: 'COMMIT_STATUS_REFUSED', reason: expect.stringMatching(/norm-outlier/) });
  expect(planner.excludedUntil(ids[3].peerId)).toBe(7);
  // Attempt 2: the two that are left; no median of two is judged, and they may start.
  expect(planner.attempt).toBe(2);
  expect(commit(ids[0], 1, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_REPLAN' });
  expect(() => commit(ids[0], 2, 'zz', 1)).toThrow(expect.objectContaining({ reason: 'bad-root' }));
  expect(commit(ids[0], 2, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_WAIT', missingRanks: [expect.any(Number)] });
  expect(() => commit(ids[0], 2, 'e'.repeat(64), 1)).toThrow(expect.objectContaining({ status: grpc.status.FAILED_PRECONDITION, reason: 'conflicting-commitment' }));
  expect(commit(ids[2], 2, 'c'.repeat(64), 1.1)).toMatchObject({ status: 'COMMIT_STATUS_GO', clipNorm: 0 }); // no clip below three members
  expect(commit(ids[0], 2, 'a'.repeat(64), 1)).toMatchObject({ status: 'COMMIT_STATUS_GO' });
  expect(book.get(1, ids[0].peerId)).toMatchObject({ attempt: 2, merkleRoot: 'a'.repeat(64) });
  expect(book.refusedIn(1).size).toBe(2);
});

test('the clip bound: clipFactor × the median scale bound once all are in', () => {
  const { ids, book, commit } = bookFixture();
  expect(commit(ids[0], 0, 'a'.repeat(64), 1, { bound: 3.6 })).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  expect(commit(ids[1], 0, 'b'.repeat(64), 1.1, { bound: 4.0 })).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  expect(commit(ids[2], 0, 'c'.repeat(64), 1.2, { bound: 4.4 })).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  // Within the norm outlier bound, but with scales that allow about 5× the others: it will be clipped.
  const go = commit(ids[3], 0, 'd'.repeat(64), 5.5, { bound: 20 });
  expect(go).toMatchObject({ status: 'COMMIT_STATUS_GO' });
  expect(go.clipNorm).toBeCloseTo(2 * 4.2, 5); // fp32 scales: the bounds are 3.6, 4, 4.4, 20 to about 1e-7
  expect(book.clipOf(1, 0)).toBe(go.clipNorm);
  expect(commit(ids[0], 0, 'a'.repeat(64), 1, { bound: 3.6 })).toMatchObject({ status: 'COMMIT_STATUS_GO', clipNorm: go.clipNorm });
  expect(clipFactor(20, go.clipNorm)).toBeCloseTo(8.4 / 20, 5);
  expect(clipFactor(4, go.clipNorm)).toBe(1);
  expect(clipFactor(20, 0)).toBe(1);
});

test('scales before the commitment: missing, malformed, or contradicting the claims, the member is refused before the ring', () => {
  const { ids, commit, pushScales, scalesOf } = bookFixture();
  expect(() => commit(ids[0], 0, 'a'.repeat(64), 1, { push: false })).toThrow(expect.objectContaining({ reason: 'scales-missing' }));
  expect(() => pushScales(ids[0], 0, new Float32Array(9))).toThrow(expect.objectContaining({ reason: 'bad-scales' })); // more than 8 blocks
  expect(() => pushScales(ids[0], 0, new Float32Array(8).fill(NaN))).toThrow(expect.objectContaining({ reason: 'bad-scales' }));
  expect(pushScales(ids[0], 5, scalesOf(1))).toEqual({ accepted: false }); // a stale or future attempt
  // Chunks arrive in order; a commit before the last one finds the scales incomplete.
  const s = scalesOf(2);
  pushScales(ids[3], 0, s.subarray(0, 4));
  expect(() => pushScales(ids[3], 0, s.subarray(4), 5)).toThrow(expect.objectContaining({ reason: 'bad-offset' }));
  expect(() => pushScales(ids[3], 0, s, 4)).toThrow(expect.objectContaining({ reason: 'bad-scales' })); // past the end
  expect(() => commit(ids[3], 0, 'd'.repeat(64), 1, { push: false })).toThrow(expect.objectContaining({ reason: 'scales-missing', message: expect.stringMatching(/sent 4 of 8/) }));
  pushScales(ids[3], 0, s.subarray(4), 4);
  expect(commit(ids[3], 0, 'd'.repeat(64), 1, { push: false })).toMatchObject({ status: 'COMMIT_STATUS_WAIT' });
  // A bound claimed 4× below what its scales give (to escape the clip).
  expect(commit(ids[0], 0, 'a'.repeat(64), 1, { bound: 4, claimBound: 1.0000001 })).toMatchObject({ status: 'COMMIT_STATUS_REFUSED', reason: expect.stringMatching(/scale-proof: committed the bound/) });
  // A norm below the floor its scales prove, and one above its own bound.
  expect(commit(ids[1], 1, 'b'.repeat(64), 0.5, { bound: 4 })).toMatchObject({ status: 'COMMIT_STATUS_REFUSED', reason: expect.stringMatching(/scale-proof: .*below the/) });
  expect(commit(ids[2], 2, 'c'.repeat(64), 5, { bound: 4 })).toMatchObject({ status: 'COMMIT_STATUS_REFUSED', reason: expect.stringMatching(/norm-claim/) });
});

test('scale proofs: the opened scales must hash to the commitment, give its bound, and not undercut its norm', async () => {
  const n = 1000;
  const block = 128;
  const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * (i % 7));
  const q = await quantize(x, block);
  const dq = await dequantize(q.codes, q.scales, block);
  const norm = deltaNorm({ codes: q.codes, scales: q.scales, block });
  const u = scaleNormBound(q.scales, n, block);
  const floor = scaleNormFloor(q.scales);
  let sq = 0;
  for (const v of dq) sq += v * v;
  expect(Math.abs(Math.sqrt(sq) - norm) / norm).toBeLessThan(1e-6); // fp32 products against fp64 ones
  expect(floor).toBeLessThanOrEqual(norm);
  expect(norm).toBeLessThanOrEqual(u);
  const c = { scalesSha256: scalesSha256(q.scales), scaleNorm: u, deltaNorm: norm };
  expect(checkScales(c, q.scales, n, block)).toBeUndefined();
  const lower = Float32Array.from(q.scales);
  lower[3] /= 2;
  expect(checkScales(c, lower, n, block)).toMatch(/not the ones it committed/);
  expect(checkScales({ ...c, scaleNorm: u / 2 }, q.scales, n, block)).toMatch(/committed the bound/);
  expect(checkScales({ ...c, deltaNorm: floor / 2 }, q.scales, n, block)).toMatch(/below the/);
  expect(checkScales(c, q.scales.subarray(1), n, block)).toMatch(/opened 7 scales, not 8/);
  // The clip applies fp32 products: the same bits wherever it is computed.
  const a = applyClip(Float32Array.from(dq), 0.37);
  const b = applyClip(Float32Array.from(dq), 0.37);
  expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  expect(a[5]).toBe(Math.fround(dq[5] * 0.37));
});

test('the useful-work verdict: no gain fails, a significant edge of the control windows fails, an honest Δ passes', () => {
  const base = { assignedBefore: 3, assignedAfter: 2.9, controlBefore: 3, controlAfter: 2.95, gainAssigned: 0.1, gainControl: 0.05 };
  expect(judgeUsefulWork({ ...base, advantages: [0.05, 0.04, 0.06, 0.05] }).ok).toBe(true);
  expect(judgeUsefulWork({ ...base, gainAssigned: 0, advantages: [0, 0, 0, 0] })).toMatchObject({ ok: false, reason: expect.stringMatching(/no gain/) });
  expect(judgeUsefulWork({ ...base, gainControl: 0.3, advantages: [-0.2, -0.21, -0.19, -0.2] })).toMatchObject({ ok: false, reason: expect.stringMatching(/significantly below/) });
  // A small, noisy deficit is not evidence.
  expect(judgeUsefulWork({ ...base, advantages: [-0.05, 0.04, -0.06, 0.05] }).ok).toBe(true);
});

test('ring transcripts: a hop whose ends report different traffic is named', () => {
  const rep = (sent: string, received: string) => ({ outcome: 'ROUND_OUTCOME_COMPLETED', transcriptSentSha256: sent, transcriptReceivedSha256: received }) as ReportRoundRequest;
  const ring = ['a', 'b', 'c'];
  const honest = new Map([['a', rep('1', '3')], ['b', rep('2', '1')], ['c', rep('3', '2')]]);
  expect(auditTranscripts(ring, honest).every((h) => h.ok)).toBe(true);
  const lying = new Map([...honest, ['b', rep('2', 'x')]]);
  expect(auditTranscripts(ring, lying).filter((h) => !h.ok)).toEqual([{ from: 'a', to: 'b', ok: false }]);
  expect(auditTranscripts(['a'], honest)).toEqual([]);
});

test('the ring audit replays the int8 ring bit for bit: every block of a real 3-rank all-reduce', async () => {
  const N = 3;
  const block = 64;
  const n = block * 20 + 17;
  const inputs = Array.from({ length: N }, (_, r) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + r) * (1 + r) * 1e-3));
  const ports = await Promise.all(Array.from({ length: N }, () => freePort()));
  const peers = ports.map((p) => `127.0.0.1:${p}`);
  const tensors = inputs.map((t) => Float32Array.from(t));
  await Promise.all(tensors.map((t, rank) => allReduce({ rank, peers, tensor: t, mode: 'int8', blockSize: block, collectiveId: { round: 1, attempt: 0 }, secret: 's' })));
  const numBlocks = Math.ceil(n / block);
  for (let b = 0; b < numBlocks; b++) {
    const len = Math.min(block, n - b * block);
    const blockInputs = inputs.map((t) => t.slice(b * block, b * block + len));
    const replayed = await reduceChunkBlock(blockInputs, chunkOf(b, numBlocks, N), block);
    expect(Buffer.from(replayed.buffer).equals(Buffer.from(tensors[0].slice(b * block, b * block + len).buffer))).toBe(true);
  }
  expect(openingSample('ab'.repeat(32), 3, numBlocks, 5)).toEqual(openingSample('ab'.repeat(32), 3, numBlocks, 5));
  expect(new Set(openingSample('ab'.repeat(32), 3, numBlocks, 5)).size).toBe(5);
});

// N ranks all-reduce their committed (dequantized) blocks, except that `cheat` feeds the ring values other
// than its commitment; then every rank opens what it sent of every block against its signed root.
async function ringWithOpenings(N: number, block: number, n: number, cheat: number, factors: number[] = Array(N).fill(1)) {
  const committed = await Promise.all(
    Array.from({ length: N }, async (_, r) => {
      const q = await quantize(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + r) * (1 + r) * 1e-3), block);
      return dequantize(q.codes, q.scales, block);
    }),
  );
  const ports = await Promise.all(Array.from({ length: N }, () => freePort()));
  const peers = ports.map((p) => `127.0.0.1:${p}`);
  const tensors = committed.map((t, r) => (r === cheat ? t.map((v) => v * 1.5) : applyClip(Float32Array.from(t), factors[r])));
  const results: AllReduceResult[] = await Promise.all(tensors.map((t, rank) => allReduce({ rank, peers, tensor: t, mode: 'int8', blockSize: block, collectiveId: { round: 1, attempt: 0 }, secret: 's', transcripts: true })));
  const numBlocks = Math.ceil(n / block);
  const all = Array.from({ length: numBlocks }, (_, b) => b);
  const opened = results.map((res, r) => new Map(ringOpenings(res.transcript!, N, r, block, all).map((o) => [`${o.step}/${o.index}`, o])));
  return { committed, results, opened, numBlocks };
}

test('ring openings: every step a block was sent opens against the signed transcript root, and nothing else does', async () => {
  const N = 3;
  const block = 64;
  const n = block * 20 + 17;
  const { results, opened, numBlocks } = await ringWithOpenings(N, block, n, -1);
  for (let r = 0; r < N; r++) {
    expect(results[r].transcript!.sentLeaves.length).toBe(32 * sentLeafCount(numBlocks, N, r));
    expect(results[r].sentSha256).toBe(results[(r + 1) % N].receivedSha256);
    for (let b = 0; b < numBlocks; b++) {
      const steps = sendSteps(N, r, chunkOf(b, numBlocks, N));
      expect(steps.length).toBeGreaterThanOrEqual(1);
      for (const step of steps) {
        const o = opened[r].get(`${step}/${b}`)!;
        const at = sentLeafIndex(numBlocks, N, r, step, b);
        expect(verifyMerklePath(results[r].sentSha256, ringLeafData(step, b, o.block), at, sentLeafCount(numBlocks, N, r), o.path)).toBe(true);
        const forged = Buffer.from(o.block);
        forged[4] ^= 1;
        expect(verifyMerklePath(results[r].sentSha256, ringLeafData(step, b, forged), at, sentLeafCount(numBlocks, N, r), o.path)).toBe(false);
      }
    }
  }
});

test.each([[-1], [0], [1], [2]])('ring blame on a real 3-rank ring: cheat %i is named on every block, honest ranks never', async (cheat) => {
  const N = 3;
  const block = 64;
  const n = block * 11 + 5;
  const { committed, opened, numBlocks } = await ringWithOpenings(N, block, n, cheat);
  for (let b = 0; b < numBlocks; b++) {
    const len = Math.min(block, n - b * block);
    const blame = await blameBlock({
      N,
      chunk: chunkOf(b, numBlocks, N),
      blockSize: block,
      inputs: committed.map((t) => t.slice(b * block, b * block + len)),
      sent: (r, step) => opened[r].get(`${step}/${b}`)?.block,
      hopOk: () => true,
    });
    if (cheat < 0) expect(blame).toEqual([]);
    else expect(blame.map((x) => x.rank)).toEqual([cheat]);
  }
  // A member that does not open what it sent is named; a hop whose roots disagree leaves its receiver unjudged.
  const b = 0;
  const args = { N, chunk: chunkOf(b, numBlocks, N), blockSize: block, inputs: committed.map((t) => t.slice(0, block)) };
  if (cheat < 0) {
    const silent = await blameBlock({ ...args, sent: (r, step) => (r === 2 ? undefined : opened[r].get(`${step}/${b}`)?.block), hopOk: () => true });
    expect(silent.map((x) => x.rank)).toEqual([2]);
  } else {
    const unjudged = await blameBlock({ ...args, sent: (r, step) => opened[r].get(`${step}/${b}`)?.block, hopOk: (r) => r !== (cheat + N - 1) % N });
    const first = chunkOf(b, numBlocks, N) === cheat; // the chunk's first sender has no input to doubt
    expect(unjudged.map((x) => x.rank)).toEqual(first ? [cheat] : []);
  }
});

test('a clipped contribution replays without blame when the validator applies the same factor; one that skips its clip is named', async () => {
  const N = 3;
  const block = 64;
  const n = block * 7 + 9;
  const factors = [1, 0.43, 1];
  const { committed, opened, numBlocks } = await ringWithOpenings(N, block, n, -1, factors);
  for (let b = 0; b < numBlocks; b++) {
    const len = Math.min(block, n - b * block);
    const args = { N, chunk: chunkOf(b, numBlocks, N), blockSize: block, sent: (r: number, step: number) => opened[r].get(`${step}/${b}`)?.block, hopOk: () => true };
    expect(await blameBlock({ ...args, inputs: committed.map((t, r) => applyClip(t.slice(b * block, b * block + len), factors[r])) })).toEqual([]);
    // Had the round clipped rank 0 instead, rank 0 (which fed its whole Δ) and not rank 1 would be named first
    // in the chunks it starts; rank 1 fed less than the validator expects from it.
    const wrong = await blameBlock({ ...args, inputs: committed.map((t, r) => applyClip(t.slice(b * block, b * block + len), r === 0 ? 0.43 : 1)) });
    expect(wrong.length).toBe(1);
    expect([0, 1]).toContain(wrong[0].rank);
  }
});

test('the verification sample is fixed by the committed hash and the round', () => {
  const m = ['a', 'b', 'c', 'd', 'e'];
  expect(sampleMembers(m, 2, 'h1', 3)).toEqual(sampleMembers(m, 2, 'h1', 3));
  expect(sampleMembers(m, 0, 'h1', 3).sort()).toEqual(m);
  const draws = new Set(Array.from({ length: 20 }, (_, r) => sampleMembers(m, 2, 'h1', r).join()));
  expect(draws.size).toBeGreaterThan(3);
  // verifyEvery: about one round in k is checked, which ones fixed by the committed hash.
  const checked = Array.from({ length: 4000 }, (_, r) => roundIsChecked(`h${r}`, r, 4)).filter(Boolean).length;
  expect(checked).toBeGreaterThan(850);
  expect(checked).toBeLessThan(1150);
  expect(roundIsChecked('h', 7, 1)).toBe(true);
});

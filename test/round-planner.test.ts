// The coordinator's round planning: RoundPlanner with a fake clock and a counting random source (members
// and ring order fixed at the planning deadline, minMembers, re-plan on failure with a new secret, bounded
// attempts, commit on agreeing hashes, resync for a dissenter, refusal of non-members, stragglers), and the
// GetPlan/ReportRound handlers end to end on loopback behind SignedServer with three signed clients.
import * as grpc from '@grpc/grpc-js';
import { createCoordinatorHandlers, createRoundHandlers } from '../src/swarm/coordinator-service';
import { SignedClient } from '../src/swarm/grpc-client';
import { SignedServer } from '../src/swarm/grpc-server';
import { Identity } from '../src/swarm/identity';
import { Membership } from '../src/swarm/membership';
import { CoordinatorMethods, coordinatorService } from '../src/swarm/proto';
import { PlannerEvent, PlanView, ringOrder, RoundPlanner, RoundPlannerOptions } from '../src/swarm/round-planner';
import { RpcError } from '../src/swarm/rpc-error';
import { newSealingKey, openSecret, SealedSecretError, secretContext } from '../src/swarm/sealed-secret';
import { RequestVerifier } from '../src/swarm/signed-request';
import { refusal } from './helpers/refusal';

function ready(view: PlanView): Extract<PlanView, { status: 'ready' }> {
  if (view.status !== 'ready') throw new Error(`expected a ready plan, got ${JSON.stringify(view)}`);
  return view;
}

const H1 = '11'.repeat(32);
const H2 = '22'.repeat(32);

describe('RoundPlanner (fake clock and RNG)', () => {
  let now: number;
  let present: { peerId: string; address: string }[];
  let secrets: number;
  let events: PlannerEvent[];
  const ids = ['a', 'b', 'c', 'd'].map((c) => c.repeat(40));
  const [A, B, C, D] = ids;
  const addr = (p: string) => `127.0.0.1:${7000 + ids.indexOf(p)}`;

  function planner(over: Partial<RoundPlannerOptions> = {}): RoundPlanner {
    return new RoundPlanner({
      seed: 'seed-1',
      members: () => present,
      minMembers: 2,
      maxAttempts: 3,
      planDelayMs: 1000,
      roundDeadlineMs: 60_000,
      now: () => now,
      randomBytes: (n) => Buffer.alloc(n, ++secrets),
      onEvent: (e) => events.push(e),
      ...over,
    });
  }

  beforeEach(() => {
    now = 1_000_000;
    present = [A, B, C].map((peerId) => ({ peerId, address: addr(peerId) }));
    secrets = 0;
    events = [];
  });

  test('members and a deterministic ring order are fixed at the planning deadline', () => {
    const p = planner();
    expect(p.getPlan(A)).toEqual({ status: 'pending', round: 1, retryAfterMs: 500 });
    now += 999;
    expect(p.getPlan(A)).toMatchObject({ status: 'pending', retryAfterMs: 1 });
    now += 1;
    const va = ready(p.getPlan(A));
    const expected = ringOrder('seed-1', 1, 0, [A, B, C]);
    expect(va.ring).toEqual(expected.map((peerId, rank) => ({ peerId, address: addr(peerId), rank })));
    expect(va.id).toEqual({ round: 1, attempt: 0 });
    expect(va.secret).toEqual(Buffer.alloc(32, 1));
    expect(va.deadlineMs).toBe(now + 60_000);
    // Every member sees the same plan, with its own rank; the order is independent of the listing order.
    for (const peer of [B, C]) {
      const v = ready(p.getPlan(peer, 1));
      expect([v.ring, v.id, v.secret]).toEqual([va.ring, va.id, va.secret]);
      expect(v.ring[v.rank].peerId).toBe(peer);
    }
    expect(ringOrder('seed-1', 1, 0, [C, A, B])).toEqual(expected);
    expect(ringOrder('seed-1', 1, 0, [A, B, C])).toEqual(expected); // same inputs, same order
    const shuffles = new Set([1, 2, 3, 4, 5, 6].map((r) => ringOrder('seed-1', r, 0, ids).join()));
    expect(shuffles.size).toBeGreaterThan(1); // the order changes with the round
    expect(events).toEqual([{ type: 'plan', round: 1, attempt: 0, ring: va.ring }]);
    expect(secrets).toBe(1); // one secret per (round, attempt), not per caller
  });

  test('fewer than minMembers present: the round waits, then plans once enough are there', () => {
    present = [{ peerId: A, address: addr(A) }];
    const p = planner();
    now += 5000;
    expect(p.getPlan(A).status).toBe('pending');
    expect(p.getPlan(A).status).toBe('pending');
    present.push({ peerId: B, address: addr(B) });
    const v = ready(p.getPlan(B));
    expect(v.ring.map((m) => m.peerId).sort()).toEqual([A, B]);
    expect(() => planner({ minMembers: 0 })).toThrow(RangeError);
  });

  test('a failure report re-plans as attempt + 1 without the suspect, with a new secret; older reports change nothing', () => {
    const p = planner();
    now += 1000;
    const first = ready(p.getPlan(A));
    expect(p.reportFailure(A, 1, 0, [C])).toEqual({ verdict: 'replan' });
    const second = ready(p.getPlan(A));
    expect(second.id).toEqual({ round: 1, attempt: 1 });
    expect(second.ring.map((m) => m.peerId)).toEqual(ringOrder('seed-1', 1, 1, [A, B]));
    expect(second.secret.equals(first.secret)).toBe(false);
    expect(p.getPlan(C)).toEqual({ status: 'not-member', round: 1, attempt: 1 });
    // B saw the same failure and reports the old attempt: told to re-plan, no second re-plan.
    expect(p.reportFailure(B, 1, 0, [C])).toEqual({ verdict: 'replan' });
    expect(p.attempt).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['plan', 'replan']);
    expect(events[1]).toMatchObject({ removed: [C] });
    // The excluded peer cannot report into the new attempt.
    expect(refusal(() => p.reportHash(C, 1, H1, 1)).status).toBe(grpc.status.PERMISSION_DENIED);
  });

  test('attempts are bounded: after maxAttempts the round is abandoned and the next opens from the same state', () => {
    present.push({ peerId: D, address: addr(D) });
    const p = planner({ maxAttempts: 2, committedRound: 4, thetaSha256: H1, startRound: 5 });
    now += 1000;
    expect(ready(p.getPlan(A)).thetaSha256).toBe(H1);
    p.reportFailure(A, 5, 0, [D]);
    expect(p.attempt).toBe(1);
    p.reportFailure(A, 5, 1, [C]);
    expect(events.at(-1)).toMatchObject({ type: 'abandon', round: 5, attempt: 1 });
    expect([p.round, p.committedRound, p.thetaSha256]).toEqual([6, 4, H1]);
    expect(p.getPlan(A, 5)).toMatchObject({ status: 'not-member', round: 5 });
    expect(p.getPlan(A).status).toBe('pending');
    now += 1000;
    const v = ready(p.getPlan(D)); // every present member is planned again in the new round
    expect(v.id).toEqual({ round: 6, attempt: 0 });
    expect(v.ring).toHaveLength(4);
    expect(v.thetaSha256).toBe(H1);
  });

  test('too few survivors abandon the round too', () => {
    const p = planner();
    now += 1000;
    p.getPlan(A);
    p.reportFailure(A, 1, 0, [B, C]);
    expect(events.at(-1)).toMatchObject({ type: 'abandon', round: 1 });
    expect(p.round).toBe(2);
  });

  test('agreeing hashes commit the round; a repeated report gets its verdict again', () => {
    const p = planner();
    now += 1000;
    p.getPlan(A);
    expect(p.reportHash(A, 1, H1)).toEqual({ verdict: 'accepted' });
    expect(p.reportHash(A, 1, H1)).toEqual({ verdict: 'accepted' }); // a retry
    expect(refusal(() => p.reportHash(A, 1, H2)).reason).toBe('conflicting-report');
    expect(p.reportHash(B, 1, H1).verdict).toBe('accepted');
    const r = p.reportHash(C, 1, H1, 0);
    expect(r.verdict).toBe('committed');
    expect(r.decision).toMatchObject({ round: 1, attempt: 0, committed: true, thetaSha256: H1 });
    expect([...r.decision!.verdicts.values()]).toEqual(['committed', 'committed', 'committed']);
    expect([p.round, p.committedRound, p.thetaSha256]).toEqual([2, 1, H1]);
    expect(p.reportHash(A, 1, H1)).toEqual({ verdict: 'committed' });
    expect(events.map((e) => e.type)).toEqual(['plan', 'commit']);
  });

  test('a member whose hash disagrees with the majority is told to resync and sits out until it holds the committed state', () => {
    let p = planner();
    now += 1000;
    p.getPlan(A);
    p.reportHash(A, 1, H1);
    p.reportHash(C, 1, H2);
    const r = p.reportHash(B, 1, H1);
    expect(r.verdict).toBe('committed');
    expect(Object.fromEntries(r.decision!.verdicts)).toEqual({ [A]: 'committed', [B]: 'committed', [C]: 'resync' });
    expect(p.reportHash(C, 1, H2)).toEqual({ verdict: 'resync' });
    expect(p.isResyncing(C)).toBe(true);
    now += 1000;
    expect(p.getPlan(C)).toMatchObject({ status: 'not-member', round: 2 });
    // C re-joins holding the committed state: planned again from the next round.
    p.reportHash(A, 2, H2);
    expect(p.reportHash(B, 2, H2).verdict).toBe('committed');
    now += 1000;
    expect(p.getPlan(C)).toMatchObject({ status: 'not-member', round: 3 }); // round 3 is fixed without C
    present[2] = { peerId: C, address: addr(C), info: { thetaSha256: H1 } } as (typeof present)[number]; // stale state: still out
    for (const peer of [A, B]) p.reportHash(peer, 3, H2);
    now += 1000;
    expect(p.getPlan(C)).toMatchObject({ status: 'not-member', round: 4 });
    present[2] = { peerId: C, address: addr(C), info: { thetaSha256: H2 } } as (typeof present)[number]; // fetched the committed state
    for (const peer of [A, B]) p.reportHash(peer, 4, H2);
    now += 1000;
    expect(ready(p.getPlan(C)).id).toEqual({ round: 5, attempt: 0 });
    expect(p.isResyncing(C)).toBe(false);

    // No strict majority: nothing commits, everyone resyncs, the round is abandoned.
    present = [A, B].map((peerId) => ({ peerId, address: addr(peerId) }));
    p = planner();
    now += 1000;
    p.getPlan(A);
    p.reportHash(A, 1, H1);
    const tie = p.reportHash(B, 1, H2);
    expect(tie.verdict).toBe('resync');
    expect(tie.decision).toMatchObject({ committed: false, thetaSha256: '' });
    expect([p.round, p.committedRound]).toEqual([2, 0]);
  });

  test('reports from a peer outside the round are refused; bad rounds and attempts too', () => {
    present.push({ peerId: D, address: addr(D) });
    const p = planner();
    expect(refusal(() => p.reportHash(A, 1, H1)).reason).toBe('plan-pending');
    now += 1000;
    p.getPlan(A);
    present = present.filter((m) => m.peerId !== D);
    const outsider = 'e'.repeat(40);
    const e = refusal(() => p.reportHash(outsider, 1, H1));
    expect([e.status, e.reason]).toEqual([grpc.status.PERMISSION_DENIED, 'not-in-round']);
    expect(refusal(() => p.reportFailure(outsider, 1, 0, [A])).status).toBe(grpc.status.PERMISSION_DENIED);
    expect(refusal(() => p.reportHash(A, 2, H1)).reason).toBe('round-not-open');
    expect(refusal(() => p.reportHash(A, 1, H1, 3)).reason).toBe('bad-attempt');
    expect(refusal(() => p.reportHash(A, 1, 'nope')).status).toBe(grpc.status.INVALID_ARGUMENT);
    expect(refusal(() => p.reportHash(outsider, 0, H1)).status).toBe(grpc.status.PERMISSION_DENIED);
    expect(p.attempt).toBe(0);
    // D left before anyone failed: a re-plan with no suspect drops it too.
    p.reportFailure(A, 1, 0, []);
    expect(ready(p.getPlan(A)).ring.map((m) => m.peerId).sort()).toEqual([A, B, C]);
  });

  test('a straggler sits the round out and joins the next one', () => {
    const p = planner();
    now += 1000;
    p.getPlan(A);
    present.push({ peerId: D, address: addr(D) }); // arrives after the planning deadline
    expect(p.getPlan(D)).toEqual({ status: 'not-member', round: 1, attempt: 0 });
    expect(refusal(() => p.reportHash(D, 1, H1)).reason).toBe('not-in-round');
    for (const peer of [A, B, C]) p.reportHash(peer, 1, H1);
    now += 1000;
    const v = ready(p.getPlan(D));
    expect(v.id).toEqual({ round: 2, attempt: 0 });
    expect(v.ring.map((m) => m.peerId).sort()).toEqual([A, B, C, D]);
  });

  test('a deadline passed with some hashes decides with them; with none, the silent members are re-planned out', () => {
    const p = planner();
    now += 1000;
    p.getPlan(A);
    p.reportHash(A, 1, H1);
    p.reportHash(B, 1, H1);
    now += 60_001;
    p.tick();
    expect([p.round, p.committedRound, p.thetaSha256]).toEqual([2, 1, H1]);
    now += 1000;
    p.getPlan(A);
    now += 60_001;
    p.tick();
    expect(events.at(-1)).toMatchObject({ type: 'abandon', round: 2 });
  });
});

describe('GetPlan / ReportRound on loopback', () => {
  const RUN = 'run-rounds-1';
  const service = coordinatorService();
  let server: SignedServer;
  let membership: Membership;
  let planner: RoundPlanner;
  let clients: SignedClient<CoordinatorMethods>[];
  let stranger: SignedClient<CoordinatorMethods>;

  beforeAll(async () => {
    membership = new Membership({ heartbeatTimeoutMs: 10_000 });
    planner = new RoundPlanner({ seed: 42, members: () => membership.list(), minMembers: 3, maxAttempts: 3, planDelayMs: 0, roundDeadlineMs: 60_000 });
    server = new SignedServer({ verifier: new RequestVerifier({ runId: RUN }) });
    server.addService(service, {
      ...createCoordinatorHandlers(membership, { heartbeatIntervalMs: 100, run: planner.runView() }),
      ...createRoundHandlers(planner, { innerSteps: 50, compression: 'COMPRESSION_INT8', blockSize: 256, allreduceTimeoutMs: 30_000, membership }),
    });
    const address = `127.0.0.1:${await server.listen('127.0.0.1:0')}`;
    const mk = () => new SignedClient(service, { address, identity: Identity.generate(), runId: RUN, deadlineMs: 5000 });
    clients = [mk(), mk(), mk()];
    stranger = mk();
  });

  afterAll(async () => {
    for (const c of [...clients, stranger]) c.close();
    await server?.close(1000);
  });

  test('three members get the same plan, secrets only to members, and agreeing hashes commit', async () => {
    // Two joined: fewer than minMembers, the round waits.
    for (const [i, c] of clients.slice(0, 2).entries()) await c.call('join', { dataAddress: `127.0.0.1:${7100 + i}` });
    const pending = await clients[0].call('getPlan', { round: 1 });
    expect(pending).toMatchObject({ status: 'PLAN_STATUS_PENDING', id: { round: 1, attempt: 0 }, ring: [] });
    expect(pending.retryAfterMs).toBeGreaterThan(0);
    await clients[2].call('join', { dataAddress: '127.0.0.1:7102' });

    const plans = await Promise.all(clients.map((c) => c.call('getPlan', { round: 1 })));
    const ring = plans[0].ring;
    expect(ring.map((m) => m.peerId)).toEqual(ringOrder(42, 1, 0, clients.map((c) => c.identity.peerId)));
    for (const [i, plan] of plans.entries()) {
      expect(plan).toMatchObject({ status: 'PLAN_STATUS_READY', id: { round: 1, attempt: 0 }, innerSteps: 50, compression: 'COMPRESSION_INT8', blockSize: 256, allreduceTimeoutMs: 30_000, thetaSha256: '' });
      expect(plan.ring).toEqual(ring);
      expect(plan.allreduceSecret).toHaveLength(32);
      expect(plan.allreduceSecret.equals(plans[0].allreduceSecret)).toBe(true);
      expect(ring[plan.rank].peerId).toBe(clients[i].identity.peerId);
      expect(ring[plan.rank].address).toBe(`127.0.0.1:${7100 + i}`);
    }
    expect((await clients[0].call('heartbeat', { round: 1 })).planAttempt).toBe(0);
    // With an X25519 key in the request the secret comes sealed to it, bound to run, collective and peer.
    const key = newSealingKey();
    const sealed = await clients[1].call('getPlan', { round: 1, x25519PublicKey: key.publicKey });
    expect(sealed.allreduceSecret).toHaveLength(0);
    const context = secretContext(clients[1].runId, 1, 0, clients[1].identity.peerId);
    expect(openSecret(sealed.sealedSecret!, key, context).equals(plans[0].allreduceSecret)).toBe(true);
    expect(() => openSecret(sealed.sealedSecret!, newSealingKey(), context)).toThrow(SealedSecretError);
    const badKey = (await clients[1].call('getPlan', { round: 1, x25519PublicKey: Buffer.alloc(5) }).catch((x: unknown) => x)) as RpcError;
    expect([badKey.status, badKey.reason]).toEqual([grpc.status.INVALID_ARGUMENT, 'bad-x25519-key']);

    // A joined straggler gets no ring and no secret; an unknown peer must join first.
    await stranger.call('join', { dataAddress: '127.0.0.1:7199' });
    const out = await stranger.call('getPlan', { round: 1 });
    expect(out).toMatchObject({ status: 'PLAN_STATUS_NOT_MEMBER', ring: [], id: { round: 1, attempt: 0 } });
    expect(out.allreduceSecret).toHaveLength(0);
    const e = (await stranger.call('reportRound', { id: { round: 1, attempt: 0 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: H1 }).catch((x: unknown) => x)) as RpcError;
    expect([e.status, e.reason]).toEqual([grpc.status.PERMISSION_DENIED, 'not-in-round']);
    await stranger.call('leave', { reason: 'test' });
    expect(((await stranger.call('getPlan', { round: 1 }).catch((x: unknown) => x)) as RpcError).status).toBe(grpc.status.NOT_FOUND);

    const report = (c: SignedClient<CoordinatorMethods>) => c.call('reportRound', { id: { round: 1, attempt: 0 }, outcome: 'ROUND_OUTCOME_COMPLETED', thetaSha256: H1, meanLoss: 3.5, tokens: 1000 });
    expect(await report(clients[0])).toEqual({ verdict: 'ROUND_VERDICT_ACCEPTED', committedRound: 0, uploadUpdate: false, uploadDelta: false, openBlocks: [] });
    expect(await report(clients[1])).toEqual({ verdict: 'ROUND_VERDICT_ACCEPTED', committedRound: 0, uploadUpdate: false, uploadDelta: false, openBlocks: [] });
    expect(await report(clients[2])).toEqual({ verdict: 'ROUND_VERDICT_COMMITTED', committedRound: 1, uploadUpdate: false, uploadDelta: false, openBlocks: [] });
    expect(await report(clients[0])).toEqual({ verdict: 'ROUND_VERDICT_COMMITTED', committedRound: 1, uploadUpdate: false, uploadDelta: false, openBlocks: [] });
    expect([planner.round, planner.committedRound, planner.thetaSha256]).toEqual([2, 1, H1]);

    // Round 2: a failure at a rank re-plans without that peer.
    const p2 = await clients[0].call('getPlan', { round: 2 });
    expect(p2.thetaSha256).toBe(H1);
    const victim = p2.ring[(p2.rank + 1) % 3].peerId;
    const failed = await clients[0].call('reportRound', {
      id: { round: 2, attempt: 0 },
      outcome: 'ROUND_OUTCOME_ALLREDUCE_FAILED',
      failure: { code: 'COMM_CLOSED', phase: 'reduce-scatter', peerRank: (p2.rank + 1) % 3, message: 'peer closed' },
    });
    expect(failed.verdict).toBe('ROUND_VERDICT_REPLAN');
    // minMembers is 3: two survivors are too few, so round 2 is abandoned and round 3 opens from round 1's state.
    expect([planner.round, planner.committedRound]).toEqual([3, 1]);
    expect(victim).not.toBe(clients[0].identity.peerId);
  });
});

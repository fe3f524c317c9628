// The coordinator's membership: the Membership table with a fake clock (join, idempotent re-join,
// heartbeat refresh, drop after the timeout, leave, unknown peers), and the Join/Heartbeat/Leave handlers
// end to end on loopback behind SignedServer with two signed clients: one leaves, the other is dropped
// after it stops heartbeating, and a client for another run is refused without touching membership.
import * as grpc from '@grpc/grpc-js';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Logger } from '../src/log';
import { createCoordinatorMetrics } from '../src/metrics';
import { MetricsRegistry } from '../src/metrics/registry';
import { createCoordinatorHandlers, membershipEventSink } from '../src/swarm/coordinator-service';
import { SignedClient } from '../src/swarm/grpc-client';
import { SignedServer } from '../src/swarm/grpc-server';
import { Identity, loadOrCreateIdentity } from '../src/swarm/identity';
import { checkAddress, Membership, MembershipEvent, UNKNOWN_PEER_REASON } from '../src/swarm/membership';
import { CoordinatorMethods, coordinatorService } from '../src/swarm/proto';
import { RpcError } from '../src/swarm/rpc-error';
import { RequestVerifier } from '../src/swarm/signed-request';
import { refusal } from './helpers/refusal';

describe('Membership (fake clock)', () => {
  let now: number;
  let events: MembershipEvent[];
  let m: Membership;
  const a = Identity.generate();
  const b = Identity.generate();

  beforeEach(() => {
    now = 1_000_000;
    events = [];
    m = new Membership({ heartbeatTimeoutMs: 1000, now: () => now, onEvent: (e) => events.push(e) });
  });

  test('join records the member; a re-join by the same peer returns the same record, refreshed', () => {
    const first = m.join(a.peerId, a.publicKey, '127.0.0.1:7000', { agent: 'covenant/0.1.0', device: 'cpu' });
    expect(first).toMatchObject({ peerId: a.peerId, address: '127.0.0.1:7000', joinedAtMs: now, lastSeenMs: now, rejoins: 0 });
    expect(first.info).toEqual({ agent: 'covenant/0.1.0', device: 'cpu', stateRound: 0, thetaSha256: '', dataServer: '' });
    // A data server address is checked like the data address.
    expect(() => m.join(a.peerId, a.publicKey, '127.0.0.1:7000', { dataServer: 'no-port' })).toThrow(/is not host:port/);
    now += 500;
    const again = m.join(a.peerId, a.publicKey, '127.0.0.1:7001', { agent: 'covenant/0.1.1', stateRound: 3 });
    expect(again).toBe(first);
    expect(again).toMatchObject({ address: '127.0.0.1:7001', joinedAtMs: 1_000_000, lastSeenMs: 1_000_500, rejoins: 1 });
    expect(again.info.stateRound).toBe(3);
    expect(m.size).toBe(1);
    expect(events.map((e) => [e.type, e.type === 'join' && e.rejoin])).toEqual([['join', false], ['join', true]]);
  });

  test('members are listed sorted by peer id, whatever the join order', () => {
    const ids = [a, b, Identity.generate(), Identity.generate()];
    for (const id of ids) m.join(id.peerId, id.publicKey, 'localhost:7000');
    expect(m.list().map((x) => x.peerId)).toEqual(ids.map((x) => x.peerId).sort());
  });

  test('a heartbeat refreshes; a member silent for longer than the timeout is dropped by sweep', () => {
    m.join(a.peerId, a.publicKey, '127.0.0.1:7000');
    m.join(b.peerId, b.publicKey, '127.0.0.1:7001');
    now += 800;
    const hb = m.heartbeat(a.peerId, { round: 4, phase: 'WORKER_PHASE_INNER', innerStep: 12 });
    expect(hb).toMatchObject({ lastSeenMs: now, round: 4, phase: 'WORKER_PHASE_INNER', innerStep: 12 });
    now += 200; // b silent for exactly the timeout: still a member
    expect(m.sweep()).toEqual([]);
    now += 1;
    const dropped = m.sweep();
    expect(dropped.map((x) => x.peerId)).toEqual([b.peerId]);
    expect(m.has(b.peerId)).toBe(false);
    expect(m.has(a.peerId)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: 'drop', silentMs: 1001 });
    expect(m.sweep(now + 1001).map((x) => x.peerId)).toEqual([a.peerId]); // explicit time
    expect(m.size).toBe(0);
  });

  test('leave removes the member once; leaving again is harmless', () => {
    m.join(a.peerId, a.publicKey, '127.0.0.1:7000');
    expect(m.leave(a.peerId, 'SIGTERM')?.peerId).toBe(a.peerId);
    expect(m.leave(a.peerId)).toBeUndefined();
    expect(m.size).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['join', 'leave']);
    expect(events[1]).toMatchObject({ reason: 'SIGTERM' });
  });

  test('a heartbeat from an unknown, departed or dropped peer is refused with NOT_FOUND: re-join', () => {
    const e = refusal(() => m.heartbeat(a.peerId));
    expect([e.status, e.reason]).toEqual([grpc.status.NOT_FOUND, UNKNOWN_PEER_REASON]);
    expect(e.details).toMatch(/Join again/);
    m.join(a.peerId, a.publicKey, '127.0.0.1:7000');
    now += 5000;
    m.sweep();
    expect(refusal(() => m.heartbeat(a.peerId)).status).toBe(grpc.status.NOT_FOUND);
    m.join(a.peerId, a.publicKey, '127.0.0.1:7000');
    expect(m.heartbeat(a.peerId).lastSeenMs).toBe(now);
  });

  test('refuses bad addresses, a peer id that is not the key\'s, and bad options', () => {
    for (const addr of ['', '127.0.0.1', '127.0.0.1:0', 'host:65536', ':7000', '::1:7000', '[::1:7000', 'a b:1']) {
      expect(refusal(() => checkAddress(addr)).status).toBe(grpc.status.INVALID_ARGUMENT);
    }
    expect(checkAddress('[::1]:7000')).toBe('[::1]:7000');
    expect(refusal(() => m.join(a.peerId, b.publicKey, '127.0.0.1:7000')).reason).toBe('peer-id-mismatch');
    expect(refusal(() => m.join(a.peerId, a.publicKey.subarray(1), '127.0.0.1:7000')).reason).toBe('peer-id-mismatch');
    expect(refusal(() => m.join('nope', a.publicKey, '127.0.0.1:7000')).reason).toBe('bad-peer-id');
    expect(m.size).toBe(0);
    expect(events).toEqual([]);
    expect(() => new Membership({ heartbeatTimeoutMs: 0 })).toThrow(RangeError);
  });
});

describe('Coordinator Join/Heartbeat/Leave on loopback', () => {
  const RUN = 'run-membership-1';
  const MANIFEST = 'ab'.repeat(32);
  const service = coordinatorService();
  let tmp: string;
  let server: SignedServer;
  let address: string;
  let membership: Membership;
  let logLines: Record<string, unknown>[];
  let metrics: ReturnType<typeof createCoordinatorMetrics>;
  const clients: SignedClient<CoordinatorMethods>[] = [];
  let alice: SignedClient<CoordinatorMethods>;
  let bob: SignedClient<CoordinatorMethods>;

  function clientFor(identity: Identity, runId = RUN): SignedClient<CoordinatorMethods> {
    const c = new SignedClient(service, { address, identity, runId, deadlineMs: 5000 });
    clients.push(c);
    return c;
  }

  async function counter(name: 'joins' | 'leaves' | 'drops'): Promise<number> {
    return (await metrics.membership[name].get()).values[0]?.value ?? 0;
  }

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-membership-'));
    logLines = [];
    const logger = new Logger({ level: 'debug', stream: { write: (l: string) => logLines.push(JSON.parse(l)) }, fields: { role: 'coordinator' } });
    metrics = createCoordinatorMetrics(new MetricsRegistry({ role: 'coordinator', defaultMetrics: false }));
    membership = new Membership({ heartbeatTimeoutMs: 1000, onEvent: membershipEventSink(logger, metrics.membership) });
    server = new SignedServer({ verifier: new RequestVerifier({ runId: RUN }) });
    server.addService(
      service,
      createCoordinatorHandlers(membership, {
        heartbeatIntervalMs: 100,
        manifestSha256: MANIFEST,
        runConfigJson: '{"run":"test"}',
        run: { round: () => 5, committedRound: () => 4, thetaSha256: () => 'cd'.repeat(32) },
        logger,
        metrics: metrics.membership,
      }),
    );
    address = `127.0.0.1:${await server.listen('127.0.0.1:0')}`;
    alice = clientFor(loadOrCreateIdentity(path.join(tmp, 'alice')));
    bob = clientFor(loadOrCreateIdentity(path.join(tmp, 'bob')));
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await server?.close(1000);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('two workers join; the response carries the run view and whether to fetch state', async () => {
    const ra = await alice.call('join', { dataAddress: '127.0.0.1:7001', agent: 'covenant/test', manifestSha256: MANIFEST, device: 'cpu' });
    expect(ra).toEqual({
      peerId: alice.identity.peerId,
      round: 5,
      committedRound: 4,
      thetaSha256: 'cd'.repeat(32),
      needsState: true,
      heartbeatIntervalMs: 100,
      runConfigJson: '{"run":"test"}',
    });
    const rb = await bob.call('join', { dataAddress: '127.0.0.1:7002', manifestSha256: MANIFEST, stateRound: 4, thetaSha256: 'cd'.repeat(32) });
    expect(rb.needsState).toBe(false);
    // Re-join (a retry): same member, not a second one.
    await bob.call('join', { dataAddress: '127.0.0.1:7002', manifestSha256: MANIFEST, stateRound: 4, thetaSha256: 'cd'.repeat(32) });
    expect(membership.list().map((m) => m.peerId)).toEqual([alice.identity.peerId, bob.identity.peerId].sort());
    expect(membership.get(bob.identity.peerId)?.rejoins).toBe(1);
    expect(await counter('joins')).toBe(2);
    expect((await metrics.membership.members.get()).values[0]?.value).toBe(2);
    expect(logLines.filter((l) => l.event === 'member.join').map((l) => [l.peerId, l.rejoin, l.role])).toEqual([
      [alice.identity.peerId, false, 'coordinator'],
      [bob.identity.peerId, false, 'coordinator'],
      [bob.identity.peerId, true, 'coordinator'],
    ]);
  });

  test('a Join with another data manifest or a bad address is refused and changes nothing', async () => {
    const other = clientFor(Identity.generate());
    const e1 = (await other.call('join', { dataAddress: '127.0.0.1:7003', manifestSha256: 'ef'.repeat(32) }).catch((e: unknown) => e)) as RpcError;
    expect([e1.status, e1.reason]).toEqual([grpc.status.FAILED_PRECONDITION, 'manifest-mismatch']);
    const e2 = (await other.call('join', { dataAddress: 'nowhere', manifestSha256: MANIFEST }).catch((e: unknown) => e)) as RpcError;
    expect([e2.status, e2.reason]).toEqual([grpc.status.INVALID_ARGUMENT, 'bad-address']);
    expect(membership.size).toBe(2);
  });

  test('heartbeats refresh members; an unknown peer is told to re-join', async () => {
    const before = membership.get(alice.identity.peerId)!.lastSeenMs;
    await new Promise((r) => setTimeout(r, 20));
    const res = await alice.call('heartbeat', { round: 5, phase: 'WORKER_PHASE_INNER', innerStep: 3 });
    expect(res).toMatchObject({ action: 'HEARTBEAT_ACTION_CONTINUE', round: 5, planAttempt: 0 });
    expect(Math.abs(res.serverTimeMs - Date.now())).toBeLessThan(5000);
    expect(membership.get(alice.identity.peerId)).toMatchObject({ phase: 'WORKER_PHASE_INNER', innerStep: 3, round: 5 });
    expect(membership.get(alice.identity.peerId)!.lastSeenMs).toBeGreaterThan(before);
    const stranger = clientFor(Identity.generate());
    expect((await stranger.call('heartbeat', { round: 5 })).action).toBe('HEARTBEAT_ACTION_REJOIN');
    expect(membership.has(stranger.identity.peerId)).toBe(false);
  });

  test('a client with the wrong run id is refused and membership is unchanged', async () => {
    const snapshot = membership.list().map((m) => [m.peerId, m.lastSeenMs]);
    const wrong = clientFor(Identity.generate(), 'run-other');
    const wrongAlice = clientFor(alice.identity, 'run-other');
    for (const p of [
      wrong.call('join', { dataAddress: '127.0.0.1:7009', manifestSha256: MANIFEST }),
      wrongAlice.call('heartbeat', { round: 5 }),
      wrongAlice.call('leave', { reason: 'x' }),
    ]) {
      const e = (await p.catch((x: unknown) => x)) as RpcError;
      expect(e).toBeInstanceOf(RpcError);
      expect([e.status, e.reason]).toEqual([grpc.status.FAILED_PRECONDITION, 'run-mismatch']);
    }
    expect(membership.list().map((m) => [m.peerId, m.lastSeenMs])).toEqual(snapshot);
  });

  test('one leaves; the other, silent past the timeout, is dropped and then told to re-join', async () => {
    await alice.call('leave', { reason: 'SIGTERM' });
    expect(membership.has(alice.identity.peerId)).toBe(false);
    expect(await alice.call('leave', { reason: 'again' })).toEqual({});
    expect((await bob.call('heartbeat', { round: 5 })).action).toBe('HEARTBEAT_ACTION_CONTINUE');
    expect(membership.sweep()).toEqual([]); // bob just heartbeated
    await new Promise((r) => setTimeout(r, 1200)); // bob goes silent past heartbeatTimeoutMs = 1000
    const dropped = membership.sweep();
    expect(dropped.map((m) => m.peerId)).toEqual([bob.identity.peerId]);
    expect(membership.size).toBe(0);
    expect((await bob.call('heartbeat', { round: 5 })).action).toBe('HEARTBEAT_ACTION_REJOIN');
    expect([await counter('joins'), await counter('leaves'), await counter('drops')]).toEqual([2, 1, 1]);
    expect(logLines.find((l) => l.event === 'member.leave')).toMatchObject({ peerId: alice.identity.peerId, reason: 'SIGTERM' });
    expect(logLines.find((l) => l.event === 'member.drop')).toMatchObject({ level: 'warn', peerId: bob.identity.peerId });
  });

  test('methods not built yet answer UNIMPLEMENTED', async () => {
    const e = (await bob.call('getPlan', { round: 5 }).catch((x: unknown) => x)) as RpcError;
    expect(e.status).toBe(grpc.status.UNIMPLEMENTED);
  });
});

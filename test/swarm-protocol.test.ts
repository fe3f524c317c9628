// The control plane's protocol layer on loopback: a trivial Coordinator (Join returns the peer id it saw,
// Heartbeat echoes, FetchState streams three chunks) behind SignedServer, called through SignedClient.
// Signed calls succeed; requests for another run or protocol version, unsigned, signed by another key,
// tampered, stale, replayed or oversized are refused with the right status and reason and never reach a
// handler. Also: the canonical bytes, the nonce cache, deadlines, handler errors, and identity files.
import * as grpc from '@grpc/grpc-js';
import { createHash, generateKeyPairSync } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SignedClient } from '../src/swarm/grpc-client';
import { CallContext, SignedServer } from '../src/swarm/grpc-server';
import {
  Identity, IDENTITY_FILE, IdentityCorruptError, IdentityInsecureError, loadOrCreateIdentity, peerIdFromPublicKey, verifySignature,
} from '../src/swarm/identity';
import {
  CoordinatorMethods, coordinatorService, deadline, HeartbeatRequest, JoinRequest, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, StateChunk,
} from '../src/swarm/proto';
import { ReplayCache } from '../src/swarm/replay-cache';
import { RpcError } from '../src/swarm/rpc-error';
import { canonicalJson, canonicalRequestBytes, RequestVerifier, requestBody, signRequest } from '../src/swarm/signed-request';

const RUN = 'run-test-1';
const service = coordinatorService();

/** Handler calls by method: a refused request must leave these unchanged. */
const calls = { join: 0, heartbeat: 0, leave: 0, fetchState: 0 };
const refusals: string[] = [];
let leaveAborted = false;
let server: SignedServer;
let address: string;
let alice: Identity;
let bob: Identity;
let client: SignedClient<CoordinatorMethods>;
const extraClients: SignedClient<CoordinatorMethods>[] = [];

function clientFor(opts: Partial<ConstructorParameters<typeof SignedClient>[1]> = {}): SignedClient<CoordinatorMethods> {
  const c = new SignedClient(service, { address, identity: alice, runId: RUN, ...opts });
  extraClients.push(c);
  return c;
}

beforeAll(async () => {
  alice = Identity.generate();
  bob = Identity.generate();
  server = new SignedServer({
    verifier: new RequestVerifier({ runId: RUN }),
    onRefused: (_method, e) => refusals.push(e.reason),
  });
  server.addService(service, {
    join(req: JoinRequest, ctx: CallContext) {
      calls.join++;
      if (req.agent === 'throw-rpc') throw new RpcError(grpc.status.FAILED_PRECONDITION, 'manifest differs', 'manifest-mismatch');
      if (req.agent === 'throw-bug') throw new Error('handler bug');
      return { peerId: ctx.peer.peerId, round: 7, heartbeatIntervalMs: 1000 };
    },
    heartbeat(req: HeartbeatRequest) {
      calls.heartbeat++;
      return { action: 'HEARTBEAT_ACTION_CONTINUE', round: req.round, planAttempt: req.innerStep, serverTimeMs: Date.now() };
    },
    async leave(_req, ctx) {
      calls.leave++;
      // Never answers: waits until the client's deadline cancels the call.
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      leaveAborted = true;
      return {};
    },
    async *fetchState(req) {
      calls.fetchState++;
      const payload = Buffer.from('0123456789abcdefghij');
      const sha256 = createHash('sha256').update(payload).digest('hex');
      for (let off = 0; off < payload.length; off += 8) {
        yield {
          header: off === 0 ? { round: req.minRound, format: 'test', totalBytes: payload.length, sha256, chunkBytes: 8 } : null,
          offset: off,
          data: payload.subarray(off, off + 8),
        };
      }
    },
  });
  const port = await server.listen('127.0.0.1:0');
  address = `127.0.0.1:${port}`;
  client = new SignedClient(service, { address, identity: alice, runId: RUN });
});

afterAll(async () => {
  client.close();
  for (const c of extraClients) c.close();
  await server.close(1000);
});

/** Expects an RpcError with this status and reason, and no handler call. */
async function expectRefused(p: Promise<unknown>, status: grpc.status, reason: string, message?: RegExp): Promise<RpcError> {
  const before = { ...calls };
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(RpcError);
  const e = err as RpcError;
  expect({ status: grpc.status[e.status], reason: e.reason }).toEqual({ status: grpc.status[status], reason });
  if (message) expect(e.message).toMatch(message);
  expect(calls).toEqual(before);
  return e;
}

describe('signed calls', () => {
  test('a signed Join reaches the handler, which sees the peer id derived from the key', async () => {
    const before = calls.join;
    const res = await client.call('join', { dataAddress: '127.0.0.1:7000', agent: 'covenant/test' });
    expect(res.peerId).toBe(alice.peerId);
    expect(res.round).toBe(7);
    expect(res.needsState).toBe(false); // defaults filled in
    expect(calls.join).toBe(before + 1);
  });

  test('Heartbeat echoes; every call is a fresh request (new nonce)', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await client.call('heartbeat', { round: 41 + i, phase: 'WORKER_PHASE_INNER', innerStep: i });
      expect(res).toMatchObject({ action: 'HEARTBEAT_ACTION_CONTINUE', round: 41 + i, planAttempt: i });
    }
  });

  test('FetchState streams the chunks in order', async () => {
    const chunks: StateChunk[] = [];
    for await (const c of client.stream('fetchState', { minRound: 3 })) chunks.push(c);
    expect(chunks.map((c) => c.offset)).toEqual([0, 8, 16]);
    expect(chunks[0].header).toMatchObject({ round: 3, totalBytes: 20, chunkBytes: 8 });
    expect(chunks[1].header).toBeNull();
    const payload = Buffer.concat(chunks.map((c) => c.data));
    expect(createHash('sha256').update(payload).digest('hex')).toBe(chunks[0].header?.sha256);
  });

  test('leaving a FetchState loop early cancels the call; the client goes on working', async () => {
    let n = 0;
    for await (const _ of client.stream('fetchState', {})) if (++n === 1) break;
    expect(n).toBe(1);
    expect((await client.call('heartbeat', { round: 9 })).round).toBe(9);
  });
});

describe('refused before the handler', () => {
  test('wrong run id: FAILED_PRECONDITION naming both run ids (unary and stream)', async () => {
    const other = clientFor({ runId: 'run-other' });
    await expectRefused(other.call('join', {}), grpc.status.FAILED_PRECONDITION, 'run-mismatch', /"run-other".*"run-test-1"/);
    const stream = (async () => {
      for await (const _ of other.stream('fetchState', {})) throw new Error('no chunk expected');
    })();
    await expectRefused(stream, grpc.status.FAILED_PRECONDITION, 'run-mismatch', /Coordinator\/FetchState failed/);
  });

  test('wrong protocol version: FAILED_PRECONDITION naming both versions', async () => {
    const other = clientFor({ protocolVersion: PROTOCOL_VERSION + 1 });
    await expectRefused(
      other.call('join', {}),
      grpc.status.FAILED_PRECONDITION,
      'protocol-mismatch',
      new RegExp(`version ${PROTOCOL_VERSION + 1} but this server speaks ${PROTOCOL_VERSION}`),
    );
  });

  test('missing signature, missing meta', async () => {
    const req = client.sign('join', { agent: 'a' });
    await expectRefused(client.callPrepared('join', { ...req, meta: { ...req.meta!, signature: Buffer.alloc(0) } }), grpc.status.UNAUTHENTICATED, 'no-signature');
    await expectRefused(client.callPrepared('join', { ...req, meta: null }), grpc.status.UNAUTHENTICATED, 'no-meta');
  });

  test('signature by another key', async () => {
    const req = client.sign('join', { agent: 'a' });
    const forged = bob.sign(canonicalRequestBytes(service.methods.join.path, req.meta!, requestBody(req)));
    await expectRefused(client.callPrepared('join', { ...req, meta: { ...req.meta!, signature: forged } }), grpc.status.UNAUTHENTICATED, 'bad-signature', /signed by another key/);
  });

  test('another peer id than the key gives, a malformed key or nonce', async () => {
    const req = client.sign('join', { agent: 'a' });
    await expectRefused(client.callPrepared('join', { ...req, meta: { ...req.meta!, peerId: bob.peerId } }), grpc.status.UNAUTHENTICATED, 'peer-id-mismatch');
    await expectRefused(
      client.callPrepared('join', { ...req, meta: { ...req.meta!, publicKey: req.meta!.publicKey.subarray(0, 31) } }),
      grpc.status.UNAUTHENTICATED,
      'bad-public-key',
    );
    const shortNonce = client.sign('join', { agent: 'a' }, { nonce: Buffer.alloc(8, 1) });
    await expectRefused(client.callPrepared('join', shortNonce), grpc.status.UNAUTHENTICATED, 'bad-nonce');
  });

  test('tampered body or meta after signing', async () => {
    const req = client.sign('join', { agent: 'a', dataAddress: '10.0.0.1:7000' });
    await expectRefused(client.callPrepared('join', { ...req, dataAddress: '10.6.6.6:7000' }), grpc.status.UNAUTHENTICATED, 'bad-signature');
    await expectRefused(client.callPrepared('join', { ...req, stateRound: 1 }), grpc.status.UNAUTHENTICATED, 'bad-signature');
    await expectRefused(
      client.callPrepared('join', { ...req, meta: { ...req.meta!, timestampMs: req.meta!.timestampMs + 1 } }),
      grpc.status.UNAUTHENTICATED,
      'bad-signature',
    );
    // The same signed content sent to another method.
    const hb = client.sign('heartbeat', { round: 1 });
    await expectRefused(client.callPrepared('leave', { meta: hb.meta, reason: '' }), grpc.status.UNAUTHENTICATED, 'bad-signature');
  });

  test('stale: timestamp outside ±60 s of the server clock, either way', async () => {
    const now = Date.now();
    await expectRefused(client.call('join', {}, { sign: { timestampMs: now - 120_000 } }), grpc.status.UNAUTHENTICATED, 'stale', /behind this server's clock/);
    await expectRefused(client.call('join', {}, { sign: { timestampMs: now + 120_000 } }), grpc.status.UNAUTHENTICATED, 'stale', /ahead of this server's clock/);
  });

  test('replayed: the same signed request twice', async () => {
    const req = client.sign('join', { agent: 'once' });
    const before = calls.join;
    await client.callPrepared('join', req);
    expect(calls.join).toBe(before + 1);
    await expectRefused(client.callPrepared('join', req), grpc.status.UNAUTHENTICATED, 'replayed', /replayed request/);
  });

  test(`oversized message (> ${MAX_MESSAGE_BYTES} bytes): RESOURCE_EXHAUSTED from the server, and from a client with the default limit`, async () => {
    const big = 'x'.repeat(MAX_MESSAGE_BYTES + 1024);
    const loose = clientFor({ maxSendBytes: 4 * MAX_MESSAGE_BYTES });
    const e = await expectRefused(loose.call('join', { agent: big }), grpc.status.RESOURCE_EXHAUSTED, '');
    expect(e.details).toMatch(/larger than max/i);
    await expectRefused(client.call('join', { agent: big }), grpc.status.RESOURCE_EXHAUSTED, '');
  });

  test('the server reported every refusal by reason', () => {
    for (const r of ['run-mismatch', 'protocol-mismatch', 'no-signature', 'no-meta', 'bad-signature', 'peer-id-mismatch', 'bad-public-key', 'bad-nonce', 'stale', 'replayed']) {
      expect(refusals).toContain(r);
    }
  });
});

describe('calls and handlers', () => {
  test('every call has a deadline: a handler that never answers ends in DEADLINE_EXCEEDED and sees its signal abort', async () => {
    const t0 = Date.now();
    const err = await client.call('leave', { reason: 'test' }, { deadlineMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).status).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect((err as RpcError).message).toMatch(/^covenant\.v1\.Coordinator\/Leave failed: DEADLINE_EXCEEDED/);
    expect((err as RpcError).stack).toMatch(/swarm-protocol\.test/); // the caller's stack
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(calls.leave).toBe(1);
    for (let i = 0; i < 100 && !leaveAborted; i++) await new Promise((r) => setTimeout(r, 10));
    expect(leaveAborted).toBe(true);
  });

  test('a handler RpcError keeps its status and reason; another error becomes INTERNAL', async () => {
    const e1 = (await client.call('join', { agent: 'throw-rpc' }).catch((e: unknown) => e)) as RpcError;
    expect([e1.status, e1.reason, e1.code]).toEqual([grpc.status.FAILED_PRECONDITION, 'manifest-mismatch', 'RPC_FAILED_PRECONDITION']);
    const e2 = (await client.call('join', { agent: 'throw-bug' }).catch((e: unknown) => e)) as RpcError;
    expect(e2.status).toBe(grpc.status.INTERNAL);
    expect(e2.details).toMatch(/handler bug/);
  });

  test('a method without a handler answers UNIMPLEMENTED', async () => {
    const e = (await client.call('getPlan', { round: 1 }).catch((x: unknown) => x)) as RpcError;
    expect(e.status).toBe(grpc.status.UNIMPLEMENTED);
  });

  test('deadline() refuses non-positive and non-finite values', () => {
    expect(deadline(1000).getTime()).toBeGreaterThan(Date.now());
    expect(() => deadline(0)).toThrow(RangeError);
    expect(() => deadline(Number.NaN)).toThrow(/deadline ms/);
    expect(() => deadline('5' as unknown as number)).toThrow(TypeError);
  });
});

describe('canonical bytes and the verifier', () => {
  test('canonical JSON: sorted keys, base64 bytes, non-finite numbers as strings', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'é"'], c: Buffer.from([0, 255]), d: undefined, e: { z: -0, y: 0.1 } })).toBe(
      '{"a":[true,null,"é\\""],"b":1,"c":"AP8=","e":{"y":0.1,"z":0}}',
    );
    expect(canonicalJson([Number.NaN, Infinity, -Infinity])).toBe('["NaN","Infinity","-Infinity"]');
    expect(() => canonicalJson({ x: 1n })).toThrow(TypeError);
  });

  test('the exact bytes a Heartbeat signature covers', () => {
    const meta = { runId: 'r', protocolVersion: 1, peerId: 'p', publicKey: Buffer.alloc(32, 1), timestampMs: 1700000000000, nonce: Buffer.alloc(16, 2) };
    const body = { round: 5, phase: 'WORKER_PHASE_INNER', innerStep: 0 };
    expect(canonicalRequestBytes('/covenant.v1.Coordinator/Heartbeat', meta, body).toString()).toBe(
      'covenant-signed-request/v1\n' +
        '{"body":{"innerStep":0,"phase":"WORKER_PHASE_INNER","round":5},"method":"/covenant.v1.Coordinator/Heartbeat",' +
        '"nonce":"AgICAgICAgICAgICAgICAg==","peerId":"p","protocolVersion":1,' +
        '"publicKey":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","runId":"r","timestampMs":1700000000000}',
    );
  });

  test('nonces are forgotten after 2 × skew (when the request would be stale anyway); a full cache refuses', () => {
    let now = 1_000_000;
    const v = new RequestVerifier({ runId: RUN, maxSkewMs: 1000, maxNonces: 2, now: () => now });
    const method = service.methods.heartbeat;
    const sign = () => signRequest(alice, method, { round: 1 }, { runId: RUN }, { timestampMs: now });
    const r1 = sign();
    expect(v.verify(method.path, r1).peerId).toBe(alice.peerId);
    expect(() => v.verify(method.path, r1)).toThrow(/replayed/);
    v.verify(method.path, sign());
    let full: unknown;
    try {
      v.verify(method.path, sign());
    } catch (e) {
      full = e;
    }
    expect(full).toMatchObject({ status: grpc.status.RESOURCE_EXHAUSTED, reason: 'replay-cache-full' });
    now += 2001; // both entries expire; r1 is now stale, not replayable
    expect(() => v.verify(method.path, r1)).toThrow(/stale/);
    v.verify(method.path, sign());
    expect(v.rememberedNonces).toBe(1);
  });

  test('ReplayCache evicts in arrival order', () => {
    const c = new ReplayCache(100, 10);
    expect(c.checkAndAdd('a', 0)).toBe('fresh');
    expect(c.checkAndAdd('b', 50)).toBe('fresh');
    expect(c.checkAndAdd('a', 99)).toBe('replayed');
    expect(c.checkAndAdd('a', 100)).toBe('fresh'); // a expired at 100 and was evicted first
    expect(c.size).toBe(2);
  });
});

describe('identity', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-identity-'));
  });
  afterEach(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('created with mode 0600 on first start (state dir too), reused after restarts', () => {
    const dir = path.join(tmp, 'state');
    const a = loadOrCreateIdentity(dir);
    const file = path.join(dir, IDENTITY_FILE);
    if (process.platform !== 'win32') expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(fs.readdirSync(dir)).toEqual([IDENTITY_FILE]); // no temp file left
    const b = loadOrCreateIdentity(dir);
    expect(b.peerId).toBe(a.peerId);
    expect(b.publicKey.equals(a.publicKey)).toBe(true);
    expect(a.keyFile).toBe(file);
  });

  test('peer id = hex of the first 20 bytes of SHA-256(raw public key); sign and verify', () => {
    const id = Identity.generate();
    expect(id.publicKey.length).toBe(32);
    expect(id.peerId).toBe(createHash('sha256').update(id.publicKey).digest('hex').slice(0, 40));
    expect(peerIdFromPublicKey(id.publicKey)).toBe(id.peerId);
    const sig = id.sign(Buffer.from('hello'));
    expect(verifySignature(id.publicKey, Buffer.from('hello'), sig)).toBe(true);
    expect(verifySignature(id.publicKey, Buffer.from('hellp'), sig)).toBe(false);
    expect(verifySignature(Identity.generate().publicKey, Buffer.from('hello'), sig)).toBe(false);
    expect(verifySignature(id.publicKey.subarray(1), Buffer.from('hello'), sig)).toBe(false);
  });

  (process.platform === 'win32' ? test.skip : test)('a key file readable by group or others is refused, naming the file and the fix', () => {
    loadOrCreateIdentity(tmp);
    const file = path.join(tmp, IDENTITY_FILE);
    fs.chmodSync(file, 0o644);
    expect(() => loadOrCreateIdentity(tmp)).toThrow(IdentityInsecureError);
    expect(() => loadOrCreateIdentity(tmp)).toThrow(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has mode 0644.*chmod 600 `));
    fs.chmodSync(file, 0o600);
    expect(() => loadOrCreateIdentity(tmp)).not.toThrow();
  });

  test('a corrupt or non-ed25519 key file is refused', () => {
    const file = path.join(tmp, IDENTITY_FILE);
    fs.writeFileSync(file, 'not a key', { mode: 0o600 });
    expect(() => loadOrCreateIdentity(tmp)).toThrow(IdentityCorruptError);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    fs.writeFileSync(file, ec, { mode: 0o600 });
    expect(() => loadOrCreateIdentity(tmp)).toThrow(/holds a key of type ec, not ed25519/);
  });
});

// The coordinator's committed state and round log: global state persisted atomically and loaded back
// bit-identical, a corrupt file refused by name; FetchState over loopback gRPC (SignedServer + SignedClient)
// reassembling θ and momentum across several chunks, and refusing tampered, truncated, reordered streams;
// the JSON-lines round log with a torn last line reported and cut off, and earlier damage refused.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { GLOBAL_STATE_FILE, GlobalState, decodeGlobalState, encodeGlobalState, loadGlobalState, makeGlobalState, saveGlobalState } from '../src/swarm/global-state';
import { SignedClient } from '../src/swarm/grpc-client';
import { SignedServer } from '../src/swarm/grpc-server';
import { Identity } from '../src/swarm/identity';
import { CoordinatorMethods, MessageInit, STATE_CHUNK_BYTES, StateChunk, coordinatorService } from '../src/swarm/proto';
import { ROUND_LOG_FILE, RoundLog, RoundLogEntry, readRoundLog } from '../src/swarm/round-log';
import { RpcError } from '../src/swarm/rpc-error';
import { RequestVerifier } from '../src/swarm/signed-request';
import { fetchState, statePayload, streamState } from '../src/swarm/state-stream';
import { paramsSha256 } from '../src/train/checkpoint';

function randomState(round: number, n: number, seed = 1): GlobalState {
  const theta = new Float32Array(n);
  const momentum = new Float32Array(n);
  let x = seed >>> 0;
  const next = () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32 - 0.5;
  };
  for (let i = 0; i < n; i++) {
    theta[i] = next();
    momentum[i] = next() * 1e-3;
  }
  theta[3] = -0; // signed zero and odd values must survive bit for bit
  momentum[5] = 1e-40; // subnormal
  return makeGlobalState(round, theta, momentum);
}

function bits(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function expectSame(a: GlobalState, b: GlobalState): void {
  expect(b.round).toBe(a.round);
  expect(b.thetaHash).toBe(a.thetaHash);
  expect(bits(b.theta).equals(bits(a.theta))).toBe(true);
  expect(bits(b.momentum).equals(bits(a.momentum))).toBe(true);
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-gs-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('global state on disk', () => {
  test('persist and load round trip is bit-identical; a missing file is a fresh run', async () => {
    expect(await loadGlobalState(tmp)).toBeUndefined();
    const s = randomState(7, 1000);
    expect(s.thetaHash).toBe(paramsSha256(s.theta));
    await saveGlobalState(tmp, s);
    const back = await loadGlobalState(tmp);
    expect(back).toBeDefined();
    expectSame(s, back as GlobalState);
    expect(Object.is((back as GlobalState).theta[3], -0)).toBe(true);
    // Replacing it leaves no temp files behind.
    const s2 = randomState(8, 1000, 2);
    await saveGlobalState(tmp, s2);
    expectSame(s2, (await loadGlobalState(tmp)) as GlobalState);
    expect(fs.readdirSync(tmp)).toEqual([GLOBAL_STATE_FILE]);
  });

  test('a corrupt file is refused with an error naming it', async () => {
    const s = randomState(3, 256);
    await saveGlobalState(tmp, s);
    const file = path.join(tmp, GLOBAL_STATE_FILE);
    const good = fs.readFileSync(file);

    // A flipped bit in theta: the hash no longer matches.
    const flipped = Buffer.from(good);
    flipped[flipped.length - 1024 - 3] ^= 0x01; // inside theta (momentum is the last 1024 bytes)
    fs.writeFileSync(file, flipped);
    await expect(loadGlobalState(tmp)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining(file) });
    await expect(loadGlobalState(tmp)).rejects.toThrow(/checksum mismatch/);

    // Truncated.
    fs.writeFileSync(file, good.subarray(0, good.length - 100));
    await expect(loadGlobalState(tmp)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringMatching(/truncated/) });
    await expect(loadGlobalState(tmp)).rejects.toThrow(file);

    // Garbage.
    fs.writeFileSync(file, Buffer.from('not a state file at all'));
    await expect(loadGlobalState(tmp)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining(file) });
    // The bad file is left alone for the operator.
    expect(fs.readFileSync(file, 'utf8')).toBe('not a state file at all');
  });

  test('makeGlobalState validates its inputs', () => {
    expect(() => makeGlobalState(-1, new Float32Array(2), new Float32Array(2))).toThrow(RangeError);
    expect(() => makeGlobalState(0, new Float32Array(2), new Float32Array(3))).toThrow(/momentum has 3/);
    expect(() => makeGlobalState(0, new Float32Array(0), new Float32Array(0))).toThrow(/empty/);
    const s = randomState(1, 10);
    expectSame(s, decodeGlobalState(Buffer.concat(encodeGlobalState(s))));
  });
});

describe('FetchState over loopback gRPC', () => {
  const RUN = 'run-gs';
  let server: SignedServer | undefined;
  let client: SignedClient<CoordinatorMethods> | undefined;
  /** What the server's FetchState handler streams; tests replace it. */
  let source: (req: { minRound: number; offset: number; expectSha256: string }) => AsyncIterable<MessageInit<StateChunk>>;
  const CHUNK = 64 * 1024;

  beforeAll(async () => {
    server = new SignedServer({ verifier: new RequestVerifier({ runId: RUN }) });
    server.addService(coordinatorService(), { fetchState: (req, ctx) => streamOf(source(req), ctx.signal) });
    const address = `127.0.0.1:${await server.listen('127.0.0.1:0')}`;
    client = new SignedClient(coordinatorService(), { address, identity: Identity.generate(), runId: RUN, deadlineMs: 5000, streamDeadlineMs: 20_000 });
  });
  afterAll(async () => {
    client?.close();
    await server?.close(1000);
  });

  async function* streamOf(it: AsyncIterable<MessageInit<StateChunk>>, signal: AbortSignal): AsyncGenerator<MessageInit<StateChunk>> {
    for await (const c of it) {
      if (signal.aborted) return;
      yield c;
    }
  }

  /** The chunks of `state`, passed through `edit` (which may change, drop, reorder or add chunks). */
  function edited(state: GlobalState, edit: (chunks: MessageInit<StateChunk>[]) => MessageInit<StateChunk>[], chunkBytes = CHUNK) {
    return async function* () {
      const all: MessageInit<StateChunk>[] = [];
      for await (const c of streamState(state, {}, { chunkBytes })) all.push({ ...c, data: Buffer.from(c.data as Uint8Array) });
      yield* edit(all);
    };
  }

  test('θ and momentum spanning several full-size chunks arrive bit-identical', async () => {
    const state = randomState(12, 600_000); // 4.8 MB of payload: 5 chunks of STATE_CHUNK_BYTES
    const payload = statePayload(state);
    expect(payload.totalBytes).toBeGreaterThan(4 * STATE_CHUNK_BYTES);
    let seen = 0;
    source = (req) => {
      seen += 1;
      return streamState(state, req);
    };
    const got = await fetchState(client!, { minRound: 12 });
    expect(seen).toBe(1);
    expectSame(state, got);
  });

  test('the server chunks on a fixed grid: header first, offsets in order, all but the last full', async () => {
    const state = randomState(2, 50_000);
    const chunks: MessageInit<StateChunk>[] = [];
    for await (const c of streamState(state, {}, { chunkBytes: CHUNK })) chunks.push(c);
    const total = statePayload(state).totalBytes;
    expect(chunks.length).toBe(Math.ceil(total / CHUNK));
    expect(chunks[0].header).toMatchObject({ round: 2, totalBytes: total, chunkBytes: CHUNK, thetaSha256: state.thetaHash, format: 'safetensors' });
    expect(chunks.slice(1).every((c) => c.header === null)).toBe(true);
    chunks.forEach((c, i) => expect(c.offset).toBe(i * CHUNK));
    expect(chunks.slice(0, -1).every((c) => (c.data as Uint8Array).byteLength === CHUNK)).toBe(true);
    // Resume from a later offset: needs the payload's hash; chunks stay on the grid.
    const resumed: MessageInit<StateChunk>[] = [];
    for await (const c of streamState(state, { offset: CHUNK + 10, expectSha256: statePayload(state).sha256 }, { chunkBytes: CHUNK })) resumed.push(c);
    expect(resumed[0]).toMatchObject({ offset: CHUNK + 10 });
    expect(resumed[1]).toMatchObject({ offset: 2 * CHUNK, header: null });
    await expect(async () => {
      for await (const c of streamState(state, { offset: 10, expectSha256: 'ab'.repeat(32) })) void c;
    }).rejects.toMatchObject({ reason: 'state-changed' });
  });

  test('a state older than min_round is refused by the server', async () => {
    const state = randomState(4, 100);
    source = (req) => streamState(state, req);
    const err = await fetchState(client!, { minRound: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect(err).toMatchObject({ reason: 'state-too-old' });
  });

  const corrupt = { code: 'STATE_CORRUPT' };

  test('a tampered chunk is refused (payload checksum)', async () => {
    const state = randomState(9, 100_000);
    source = edited(state, (cs) => {
      (cs[2].data as Buffer)[100] ^= 0x40;
      return cs;
    });
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/SHA-256.*tampered/) });
  });

  test('a consistent forgery (payload and header hash rewritten) is still refused by the θ hash', async () => {
    const state = randomState(9, 100_000);
    const tampered = decodeGlobalState(Buffer.concat(encodeGlobalState(state)));
    tampered.theta[10] += 1; // θ changed, but the payload metadata keeps the old theta_sha256
    const p = Buffer.concat(encodeGlobalState({ ...tampered, thetaHash: state.thetaHash }));
    const sha = createHash('sha256').update(p).digest('hex');
    source = async function* () {
      yield { header: { round: 9, format: 'safetensors', totalBytes: p.length, sha256: sha, thetaSha256: state.thetaHash, chunkBytes: CHUNK }, offset: 0, data: p.subarray(0, CHUNK) };
      for (let o = CHUNK; o < p.length; o += CHUNK) yield { offset: o, data: p.subarray(o, o + CHUNK) };
    };
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/checksum mismatch/) });
  });

  test('a truncated stream is refused', async () => {
    const state = randomState(9, 100_000);
    source = edited(state, (cs) => cs.slice(0, -1));
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/truncated/) });
  });

  test('reordered, repeated, oversized and headerless streams are refused', async () => {
    const state = randomState(9, 100_000);
    source = edited(state, (cs) => [cs[0], cs[2], cs[1], ...cs.slice(3)]);
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/out of order/) });
    source = edited(state, (cs) => [cs[0], cs[1], cs[1], ...cs.slice(2)]);
    await expect(fetchState(client!)).rejects.toMatchObject(corrupt);
    source = edited(state, (cs) => [{ ...cs[0], data: Buffer.concat([cs[0].data as Buffer, Buffer.alloc(1)]) }, ...cs.slice(1)]);
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/expected 65536/) });
    source = edited(state, (cs) => [{ ...cs[0], header: null }, ...cs.slice(1)]);
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/no header/) });
    source = edited(state, (cs) => [cs[0], { ...cs[1], header: cs[0].header }, ...cs.slice(2)]);
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/second header/) });
    source = async function* () {}; // nothing at all
    await expect(fetchState(client!)).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/without a header/) });
    // A header claiming more than the client accepts.
    source = edited(state, (cs) => cs);
    await expect(fetchState(client!, { maxBytes: 1000 })).rejects.toMatchObject({ ...corrupt, message: expect.stringMatching(/limit/) });
    // And after all that, an honest stream still works.
    expectSame(state, await fetchState(client!));
  });
});

describe('round log', () => {
  const H = (c: string) => c.repeat(64);
  const entry = (round: number): RoundLogEntry => ({
    round,
    attempt: round % 2,
    members: ['a'.repeat(40), 'b'.repeat(40)],
    ring: ['b'.repeat(40), 'a'.repeat(40)],
    tokens: 1000 * round,
    meanLoss: round === 2 ? null : 3.5 - round / 10,
    thetaSha256: H(String(round % 10)),
    plannedAtMs: 1_700_000_000_000 + round,
    committedAtMs: 1_700_000_001_000 + round,
    timings: { innerSeconds: 1.5, allreduceSeconds: 0.25, outerSeconds: 0.01, totalSeconds: 1.76 },
  });

  test('append and read back; rounds must increase; reopening continues the log', async () => {
    const { log, entries, torn } = await RoundLog.open(tmp);
    expect(entries).toEqual([]);
    expect(torn).toBeUndefined();
    await Promise.all([log.append(entry(1)), log.append(entry(2)), log.append(entry(3))]);
    await expect(log.append(entry(3))).rejects.toThrow(/does not follow/);
    await expect(log.append({ ...entry(4), thetaSha256: 'xyz' })).rejects.toThrow(TypeError);
    expect(log.lastRound).toBe(3);
    await log.close();
    const text = fs.readFileSync(path.join(tmp, ROUND_LOG_FILE), 'utf8');
    expect(text.split('\n')).toHaveLength(4); // three lines and the final newline
    expect((await readRoundLog(path.join(tmp, ROUND_LOG_FILE))).entries).toEqual([entry(1), entry(2), entry(3)]);

    const again = await RoundLog.open(tmp);
    expect(again.entries).toEqual([entry(1), entry(2), entry(3)]);
    expect(again.log.lastRound).toBe(3);
    await again.log.append(entry(4));
    await again.log.close();
    expect((await readRoundLog(path.join(tmp, ROUND_LOG_FILE))).entries.map((e) => e.round)).toEqual([1, 2, 3, 4]);
  });

  test('a torn last line is reported, ignored and cut off before the next append', async () => {
    const file = path.join(tmp, ROUND_LOG_FILE);
    const { log } = await RoundLog.open(tmp);
    await log.append(entry(1));
    await log.append(entry(2));
    await log.close();
    const goodBytes = fs.statSync(file).size;
    const line3 = JSON.stringify(entry(3));
    fs.appendFileSync(file, line3.slice(0, 40)); // the crash cut the append short

    const read = await readRoundLog(file);
    expect(read.entries.map((e) => e.round)).toEqual([1, 2]);
    expect(read.torn).toEqual({ line: 3, offset: goodBytes, bytes: 40 });

    const reopened = await RoundLog.open(tmp);
    expect(reopened.torn).toEqual({ line: 3, offset: goodBytes, bytes: 40 });
    expect(reopened.entries.map((e) => e.round)).toEqual([1, 2]);
    expect(fs.statSync(file).size).toBe(goodBytes);
    await reopened.log.append(entry(3));
    await reopened.log.close();
    const final = await readRoundLog(file);
    expect(final.torn).toBeUndefined();
    expect(final.entries).toEqual([entry(1), entry(2), entry(3)]);
  });

  test('a damaged line before the last is an error naming the file and line', async () => {
    const file = path.join(tmp, ROUND_LOG_FILE);
    const lines = [entry(1), entry(2), entry(3)].map((e) => JSON.stringify(e));
    fs.writeFileSync(file, `${lines[0]}\n${lines[1].slice(0, 30)}\n${lines[2]}\n`);
    await expect(readRoundLog(file)).rejects.toMatchObject({ code: 'ROUND_LOG_CORRUPT', message: expect.stringContaining(`${file}, line 2`) });
    await expect(RoundLog.open(tmp)).rejects.toMatchObject({ code: 'ROUND_LOG_CORRUPT' });
    // A complete (newline-terminated) last line that is bad is damage too, not a torn append.
    fs.writeFileSync(file, `${lines[0]}\n{"round":2}\n`);
    await expect(readRoundLog(file)).rejects.toMatchObject({ code: 'ROUND_LOG_CORRUPT', message: expect.stringMatching(/line 2.*attempt/) });
    // Rounds out of order.
    fs.writeFileSync(file, `${lines[1]}\n${lines[0]}\n`);
    await expect(readRoundLog(file)).rejects.toThrow(/round 1 does not follow round 2/);
    // The damaged file is left as it was.
    expect(fs.readFileSync(file, 'utf8')).toBe(`${lines[1]}\n${lines[0]}\n`);
  });
});

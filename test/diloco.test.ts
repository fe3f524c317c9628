// The DiLoCo pieces: the outer Nesterov step against a float64 reference and bit-identical across runs,
// the pseudo-gradient, the pure data assignment (seed, batches, digest) over a real prepared data
// directory, and the worker's persisted state with every kind of damage refused.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataLoader, windowStart } from '../src/data/loader';
import { prepareData } from '../src/data/prepare';
import { assignedBatch, assignmentDigest, loaderNumStarts, windowSeed } from '../src/diloco/assignment';
import { outerStep, pseudoGradient } from '../src/diloco/outer-step';
import {
  WORKER_STATE_FILE,
  WorkerState,
  decodeWorkerState,
  encodeWorkerState,
  loadWorkerState,
  makeWorkerState,
  saveWorkerState,
  workerStatePath,
} from '../src/diloco/worker-state';
import { paramsSha256 } from '../src/train/checkpoint';
import { encodeSafetensors } from '../src/train/safetensors';

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32 - 0.5;
  };
}

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const next = rng(seed);
  return Float32Array.from({ length: n }, () => next() * scale);
}

function bits(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

describe('outer step', () => {
  const N = 10_000;

  test('matches a float64 Nesterov reference within fp32 rounding', () => {
    const theta = randomArray(N, 1);
    const m = randomArray(N, 2, 0.01);
    const settings = { lr: 0.7, momentum: 0.9 };
    // Two rounds, so the momentum carried from the first feeds the second.
    const refTheta = Float64Array.from(theta);
    const refM = Float64Array.from(m);
    for (const seed of [3, 4]) {
      const delta = randomArray(N, seed, 0.01);
      outerStep(theta, m, delta, settings);
      for (let i = 0; i < N; i++) {
        refM[i] = 0.9 * refM[i] + delta[i];
        refTheta[i] -= 0.7 * (delta[i] + 0.9 * refM[i]);
      }
    }
    let worstTheta = 0;
    let worstM = 0;
    for (let i = 0; i < N; i++) {
      worstTheta = Math.max(worstTheta, Math.abs(theta[i] - refTheta[i]) / Math.max(Math.abs(refTheta[i]), 1e-3));
      worstM = Math.max(worstM, Math.abs(m[i] - refM[i]) / Math.max(Math.abs(refM[i]), 1e-3));
    }
    // A few fp32 roundings (2^-24 each) per element and round.
    expect(worstTheta).toBeLessThan(1e-5);
    expect(worstM).toBeLessThan(1e-5);
  });

  test('momentum 0 is plain SGD on the pseudo-gradient', () => {
    const theta = randomArray(N, 5);
    const m = randomArray(N, 6);
    const delta = randomArray(N, 7, 0.1);
    const lr = 0.5; // a power of two: θ − lr·Δ is exactly one fp32 rounding
    const expected = Float32Array.from(theta, (t, i) => t - lr * delta[i]);
    outerStep(theta, m, delta, { lr, momentum: 0 });
    expect(bits(theta).equals(bits(expected))).toBe(true);
    expect(bits(m).equals(bits(delta))).toBe(true);
  });

  test('two runs on the same inputs are bit-identical', () => {
    const run = () => {
      const theta = randomArray(N, 8);
      const m = randomArray(N, 9, 0.01);
      for (const seed of [10, 11, 12]) outerStep(theta, m, randomArray(N, seed, 0.01), { lr: 0.7, momentum: 0.9 });
      return [theta, m];
    };
    const [t1, m1] = run();
    const [t2, m2] = run();
    expect(paramsSha256(t1)).toBe(paramsSha256(t2));
    expect(bits(m1).equals(bits(m2))).toBe(true);
  });

  test('refuses a non-finite delta without modifying anything', () => {
    const theta = randomArray(100, 13);
    const m = randomArray(100, 14);
    const before = [Buffer.from(bits(theta)), Buffer.from(bits(m))];
    for (const bad of [NaN, Infinity, -Infinity]) {
      const delta = randomArray(100, 15);
      delta[57] = bad;
      expect(() => outerStep(theta, m, delta, { lr: 0.7, momentum: 0.9 })).toThrow(/delta\[57\]/);
    }
    expect(bits(theta).equals(before[0])).toBe(true);
    expect(bits(m).equals(before[1])).toBe(true);
  });

  test('checks lengths and settings', () => {
    const a = new Float32Array(4);
    expect(() => outerStep(a, new Float32Array(3), a, { lr: 1, momentum: 0 })).toThrow(/momentum/);
    expect(() => outerStep(a, new Float32Array(4), new Float32Array(5), { lr: 1, momentum: 0 })).toThrow(/delta/);
    expect(() => outerStep(a, new Float32Array(4), new Float32Array(4), { lr: -1, momentum: 0 })).toThrow(/settings\.lr/);
    expect(() => outerStep(a, new Float32Array(4), new Float32Array(4), { lr: 1, momentum: 1 })).toThrow(/settings\.momentum/);
    expect(() => outerStep(a, new Float32Array(4), new Float32Array(4), { lr: 1, momentum: -0.1 })).toThrow(RangeError);
  });

  test('pseudoGradient is start − local, into out when given', () => {
    const start = randomArray(1000, 16);
    const local = randomArray(1000, 17);
    const d = pseudoGradient(start, local);
    expect(bits(d).equals(bits(Float32Array.from(start, (s, i) => s - local[i])))).toBe(true);
    const out = new Float32Array(1000);
    expect(pseudoGradient(start, local, out)).toBe(out);
    expect(bits(out).equals(bits(d))).toBe(true);
    expect(() => pseudoGradient(start, new Float32Array(999))).toThrow(/local/);
    expect(() => pseudoGradient(start, local, new Float32Array(3))).toThrow(/out/);
    expect(() => pseudoGradient(start, [1, 2] as unknown as Float32Array)).toThrow(TypeError);
  });
});

describe('data assignment', () => {
  let tmp: string;
  let loader: DataLoader;
  const B = 4;
  const T = 16;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-diloco-'));
    const src = path.join(tmp, 'src');
    fs.mkdirSync(src);
    for (let i = 0; i < 10; i++) {
      const words = Array.from({ length: 40 + 5 * i }, (_, j) => `w${i}.${j}`);
      fs.writeFileSync(path.join(src, `d${i}.txt`), `Text ${i}: ${words.join(' ')}`);
    }
    const dataDir = path.join(tmp, 'data');
    await prepareData({ inputs: [src], tokenizer: 'bytes', outDir: dataDir, shardTokens: 1000, valFraction: 0.2 });
    loader = DataLoader.open(dataDir, { split: 'train' });
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('windowSeed is a deterministic safe integer that differs by run seed, round and peer', () => {
    const s = windowSeed(42, 3, 'peer-a');
    expect(windowSeed(42, 3, 'peer-a')).toBe(s);
    expect(Number.isSafeInteger(s) && s >= 0 && s < 2 ** 48).toBe(true);
    const others = [windowSeed(43, 3, 'peer-a'), windowSeed(42, 4, 'peer-a'), windowSeed(42, 3, 'peer-b')];
    expect(new Set([s, ...others]).size).toBe(4);
    expect(() => windowSeed(-1, 0, 'p')).toThrow(/runSeed/);
    expect(() => windowSeed(0, 1.5, 'p')).toThrow(/round/);
    expect(() => windowSeed(0, 0, '')).toThrow(/peerId/);
  });

  test('assignedBatch is the same twice, differs across peers and rounds, and reads the digested windows', () => {
    const a = assignedBatch(loader, 7, 2, 'peer-a', 5, B, T);
    expect(a).toEqual(assignedBatch(loader, 7, 2, 'peer-a', 5, B, T));
    expect(a).not.toEqual(assignedBatch(loader, 7, 2, 'peer-b', 5, B, T));
    expect(a).not.toEqual(assignedBatch(loader, 7, 3, 'peer-a', 5, B, T));
    // Row b is the T+1 tokens at the window start the digest covers.
    const seed = windowSeed(7, 2, 'peer-a');
    const numStarts = loaderNumStarts(loader, T);
    for (let b = 0; b < B; b++) {
      const row = new Int32Array(T + 1);
      loader.read(windowStart(seed, 5, b, numStarts), T + 1, row);
      expect(a.subarray(b * (T + 1), (b + 1) * (T + 1))).toEqual(row);
    }
  });

  test('assignmentDigest is deterministic, hashes the starts as u64 LE and changes with the peer', () => {
    const numStarts = loaderNumStarts(loader, T);
    const d = assignmentDigest(7, 2, 'peer-a', 3, B, T, numStarts);
    expect(d).toMatch(/^[0-9a-f]{64}$/);
    expect(assignmentDigest(7, 2, 'peer-a', 3, B, T, numStarts)).toBe(d);
    expect(assignmentDigest(7, 2, 'peer-b', 3, B, T, numStarts)).not.toBe(d);
    expect(assignmentDigest(7, 3, 'peer-a', 3, B, T, numStarts)).not.toBe(d);
    const seed = windowSeed(7, 2, 'peer-a');
    const words = Buffer.alloc(3 * B * 8);
    for (let step = 0, k = 0; step < 3; step++) {
      for (let row = 0; row < B; row++, k++) words.writeBigUInt64LE(BigInt(windowStart(seed, step, row, numStarts)), k * 8);
    }
    expect(d).toBe(createHash('sha256').update(words).digest('hex'));
    expect(() => assignmentDigest(7, 2, 'peer-a', 3, 0, T, numStarts)).toThrow(/B/);
    expect(() => assignmentDigest(7, 2, 'peer-a', 3, B, T, 0)).toThrow(/numStarts/);
  });
});

describe('worker state on disk', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-ws-'));
  });
  afterEach(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const N = 300;
  function randomState(round: number, seed = 1, runId = 'run-1'): WorkerState {
    const theta = randomArray(N, seed);
    theta[3] = -0; // signed zero and subnormals must survive bit for bit
    const residual = randomArray(N, seed + 5, 1e-3);
    residual[5] = 1e-40;
    return makeWorkerState({
      runId,
      round,
      theta,
      momentum: randomArray(N, seed + 1, 1e-2),
      adamM: randomArray(N, seed + 2, 1e-3),
      adamV: Float32Array.from(randomArray(N, seed + 3, 1e-6), Math.abs),
      adamStep: 1234,
      residual,
    });
  }

  function expectSame(a: WorkerState, b: WorkerState): void {
    expect([b.runId, b.round, b.adamStep, b.thetaSha256]).toEqual([a.runId, a.round, a.adamStep, a.thetaSha256]);
    for (const k of ['theta', 'momentum', 'adamM', 'adamV', 'residual'] as const) expect(bits(b[k]).equals(bits(a[k]))).toBe(true);
  }

  test('save and load round trip exactly; a missing file is a fresh worker; no temp file is left', async () => {
    const dir = path.join(tmp, 'state', 'nested');
    expect(await loadWorkerState(dir)).toBeUndefined();
    const s = randomState(7);
    expect(Object.isFrozen(s)).toBe(true);
    expect(s.thetaSha256).toBe(paramsSha256(s.theta));
    await saveWorkerState(dir, s);
    const back = (await loadWorkerState(dir, { runId: 'run-1', numParams: N })) as WorkerState;
    expectSame(s, back);
    expect(Object.is(back.theta[3], -0)).toBe(true);
    const s2 = randomState(8, 2);
    await saveWorkerState(dir, s2);
    expectSame(s2, (await loadWorkerState(dir)) as WorkerState);
    expect(fs.readdirSync(dir)).toEqual([WORKER_STATE_FILE]);
    const mode = fs.statSync(workerStatePath(dir)).mode & 0o777;
    expect(mode & 0o600).toBe(0o600);
    expect(mode & 0o022).toBe(0);
    expectSame(s2, decodeWorkerState(Buffer.concat(encodeWorkerState(s2))));
  });

  test('a damaged file is refused with CHECKPOINT_CORRUPT naming it, and left in place', async () => {
    const s = randomState(3);
    await saveWorkerState(tmp, s);
    const file = workerStatePath(tmp);
    const good = fs.readFileSync(file);
    const corrupt = async (bytes: Buffer, what: RegExp) => {
      fs.writeFileSync(file, bytes);
      await expect(loadWorkerState(tmp)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining(file) });
      await expect(loadWorkerState(tmp)).rejects.toThrow(what);
      expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    };

    // θ is the first tensor of the data section, which ends with the other four (4·N·4 bytes).
    const flipped = Buffer.from(good);
    flipped[good.length - 4 * N * 4 - 9] ^= 0x01;
    await corrupt(flipped, /checksum mismatch/);
    await corrupt(good.subarray(0, good.length - 100), /truncated/);
    await corrupt(Buffer.from('not a state file'), /invalid/);

    // Well-formed safetensors with the wrong contents, written through the real encoder.
    const meta = { format: 'covenant-worker-state/v1', run_id: 'run-1', round: '3', adam_step: '1234', theta_sha256: s.thetaSha256 };
    const tensors = (drop?: string, short?: string) =>
      (['theta', 'momentum', 'adam_m', 'adam_v', 'residual'] as const)
        .filter((n) => n !== drop)
        .map((name) => ({ name, dtype: 'F32' as const, shape: [name === short ? N - 1 : N], data: name === 'theta' ? s.theta : new Float32Array(name === short ? N - 1 : N) }));
    await corrupt(Buffer.concat(encodeSafetensors(tensors(), { ...meta, format: 'covenant-global-state/v1' })), /format/);
    await corrupt(Buffer.concat(encodeSafetensors(tensors('adam_v'), meta)), /expected exactly/);
    await corrupt(Buffer.concat(encodeSafetensors(tensors(undefined, 'residual'), meta)), /residual has 299/);
    await corrupt(Buffer.concat(encodeSafetensors(tensors(), { ...meta, round: '-1' })), /round/);
    await corrupt(Buffer.concat(encodeSafetensors(tensors(), { ...meta, adam_step: 'x' })), /adam_step/);
  });

  test('a state of another run or parameter count is refused with both values named', async () => {
    await saveWorkerState(tmp, randomState(1, 1, 'run-other'));
    const err = await loadWorkerState(tmp, { runId: 'run-1' }).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBeUndefined();
    expect(err.message).toMatch(/"run-other".*"run-1".*--state/);
    await expect(loadWorkerState(tmp, { numParams: N + 1 })).rejects.toThrow(new RegExp(`${N} parameters.*${N + 1}.*--state`));
    // The file is untouched and still loads for its own run.
    expect((await loadWorkerState(tmp, { runId: 'run-other', numParams: N }))?.round).toBe(1);
  });

  test('makeWorkerState validates its inputs', () => {
    const base = { runId: 'r', round: 0, theta: new Float32Array(2), momentum: new Float32Array(2), adamM: new Float32Array(2), adamV: new Float32Array(2), adamStep: 0, residual: new Float32Array(2) };
    expect(makeWorkerState(base).thetaSha256).toBe(paramsSha256(base.theta));
    expect(() => makeWorkerState({ ...base, runId: '' })).toThrow(/runId/);
    expect(() => makeWorkerState({ ...base, round: -1 })).toThrow(RangeError);
    expect(() => makeWorkerState({ ...base, adamStep: 0.5 })).toThrow(/adamStep/);
    expect(() => makeWorkerState({ ...base, adamV: new Float32Array(3) })).toThrow(/adamV has 3/);
    expect(() => makeWorkerState({ ...base, residual: new Float64Array(2) as unknown as Float32Array })).toThrow(TypeError);
    const empty = new Float32Array(0);
    expect(() => makeWorkerState({ ...base, theta: empty, momentum: empty, adamM: empty, adamV: empty, residual: empty })).toThrow(/empty/);
  });
});

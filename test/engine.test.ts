// The TypeScript Engine API: argument checks, zero-copy views, determinism, async behaviour.
import { createHash } from 'node:crypto';
import { buildInfo, Engine } from '../src/native';
import { ModelConfig } from '../src/train/model-config';
import { lcgTokens } from './helpers/tokens';
import { numParams, paramLayout } from '../src/train/param-layout';
import { paramsSha256 } from '../src/train/checkpoint';

const model: ModelConfig = { vocabSize: 50, maxSeqLen: 16, numLayers: 2, numHeads: 2, channels: 16 };

const tokens = (B: number, T: number, seed: number, V = model.vocabSize): Int32Array => lcgTokens(B, T, seed, V);

describe('Engine', () => {
  let eng: Engine;
  beforeEach(() => {
    eng = Engine.create({ model, threads: 2, seed: 7 });
  });
  afterEach(() => eng.dispose());

  test('flat buffers match the TypeScript layout', () => {
    expect(eng.numParams).toBe(numParams(model));
    expect(eng.params().length).toBe(eng.numParams);
    const layout = paramLayout(model);
    const lnf = layout.find((t) => t.name === 'lnfw')!;
    expect(Array.from(eng.params().subarray(lnf.offset, lnf.offset + lnf.size)).every((v) => v === 1)).toBe(true);
    expect(buildInfo().packedIsa).toMatch(/avx512|avx2|portable/);
  });

  test('params() is a zero-copy view and paramsHash() is SHA-256 of its bytes', () => {
    const p = eng.params();
    const h = createHash('sha256').update(Buffer.from(p.buffer, p.byteOffset, p.byteLength)).digest('hex');
    expect(eng.paramsHash()).toBe(h);
    expect(paramsSha256(p)).toBe(h); // the checkpoint's checksum is the same hash
    p[0] = 0.5;
    expect(eng.params()[0]).toBe(0.5);
    expect(eng.paramsHash()).not.toBe(h);
  });

  test('step trains, grads are visible, loadParams round-trips', async () => {
    const t = tokens(2, 8, 1);
    const before = Float32Array.from(eng.params());
    const r = await eng.step(t, 2, 8, { lr: 1e-2 });
    expect(Number.isFinite(r.loss)).toBe(true);
    expect(r.gradNorm).toBeGreaterThan(0);
    expect(eng.optimizerStep).toBe(1);
    expect(eng.grads().some((g) => g !== 0)).toBe(true);
    expect(Float32Array.from(eng.params())).not.toEqual(before);
    eng.loadParams(before);
    expect(Float32Array.from(eng.params())).toEqual(before);
  });

  test('same seed and data give the same hash; a different seed does not', async () => {
    const a = Engine.create({ model, threads: 2, seed: 3 });
    const b = Engine.create({ model, threads: 2, seed: 3 });
    const c = Engine.create({ model, threads: 2, seed: 4 });
    for (let s = 0; s < 3; s++) {
      const t = tokens(2, 8, 10 + s);
      await a.step(t, 2, 8, { lr: 1e-3 });
      await b.step(t, 2, 8, { lr: 1e-3 });
      await c.step(t, 2, 8, { lr: 1e-3 });
    }
    expect(a.paramsHash()).toBe(b.paramsHash());
    expect(a.paramsHash()).not.toBe(c.paramsHash());
    [a, b, c].forEach((e) => e.dispose());
  });

  test('evalLoss and logits agree; generate returns vocabulary ids', async () => {
    const t = tokens(1, 8, 5);
    const loss = await eng.evalLoss(t, 1, 8);
    const logits = await eng.logits(t.slice(0, 8), 1, 8);
    expect(logits.length).toBe(8 * model.vocabSize);
    let sum = 0;
    for (let i = 0; i < 8; i++) {
      const row = logits.subarray(i * model.vocabSize, (i + 1) * model.vocabSize);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      sum += lse - row[t[i + 1]];
    }
    expect(Math.abs(sum / 8 - loss)).toBeLessThan(1e-4);
    const out = await eng.generate([1, 2, 3], 20, { temperature: 0.8, topK: 5, seed: 1 });
    expect(out.length).toBe(20);
    expect(out.every((id) => Number.isInteger(id) && id >= 0 && id < model.vocabSize)).toBe(true);
    const again = await eng.generate([1, 2, 3], 20, { temperature: 0.8, topK: 5, seed: 1 });
    expect(again).toEqual(out);
  });

  test('bad arguments throw TypeError/RangeError naming the argument', async () => {
    const t = tokens(2, 8, 1);
    await expect(eng.step(new Float32Array(18) as unknown as Int32Array, 2, 8, { lr: 1e-3 })).rejects.toThrow(/tokens/);
    await expect(eng.step(new Float32Array(18) as unknown as Int32Array, 2, 8, { lr: 1e-3 })).rejects.toThrow(TypeError);
    await expect(eng.step(t, 2, 9, { lr: 1e-3 })).rejects.toThrow(/B\*\(T\+1\)/);
    await expect(eng.step(t, 2, 17, { lr: 1e-3 })).rejects.toThrow(RangeError);
    const bad = Int32Array.from(t);
    bad[5] = model.vocabSize;
    await expect(eng.step(bad, 2, 8, { lr: 1e-3 })).rejects.toThrow(/tokens\[5\] = 50 is outside the vocabulary/);
    await expect(eng.step(t, 2, 8, { lr: NaN })).rejects.toThrow(/opt\.lr/);
    await expect(eng.step(t, 2, 8, { lr: 1e-3, beta1: Infinity })).rejects.toThrow(/opt\.beta1/);
    await expect(eng.step(t, 2, 8, { lr: 1e-3, lrr: 1 } as never)).rejects.toThrow(/opt\.lrr/);
    await expect(eng.step(t, 0, 8, { lr: 1e-3 })).rejects.toThrow(/for B/);
    expect(() => eng.loadParams(new Float32Array(3))).toThrow(/params\.length/);
    const nan = new Float32Array(eng.numParams);
    nan[9] = NaN;
    expect(() => eng.loadParams(nan)).toThrow(/params\[9\]/);
    expect(() => Engine.create({ model: { ...model, channels: 15 }, threads: 1 })).toThrow(/divisible/);
    expect(() => Engine.create({ model: { ...model, numLayers: 0 }, threads: 1 })).toThrow(/model\.numLayers/);
    expect(() => Engine.create({ model, threads: 1, device: 'tpu' as never })).toThrow(/device/);
    expect(() => Engine.create({ model, threads: -1 })).toThrow(/threads/);
    await expect(eng.generate([1, 99], 3)).rejects.toThrow(/prompt\[1\]/);
  });

  test('a call while another is in flight is refused; dispose makes later calls throw', async () => {
    const t = tokens(2, 8, 1);
    const first = eng.step(t, 2, 8, { lr: 1e-3 });
    await expect(eng.step(t, 2, 8, { lr: 1e-3 })).rejects.toThrow(/busy/);
    await first;
    const view = eng.params();
    eng.dispose();
    expect(() => eng.paramsHash()).toThrow(/disposed/);
    await expect(eng.step(t, 2, 8, { lr: 1e-3 })).rejects.toThrow(/disposed/);
    expect(view.length).toBe(numParams(model)); // views outlive the engine
    expect(Number.isFinite(view[0])).toBe(true);
  });

  test('the event loop keeps running during a step', async () => {
    const big = Engine.create({ model: { vocabSize: 512, maxSeqLen: 64, numLayers: 4, numHeads: 4, channels: 128 }, threads: 1 });
    const t = tokens(8, 64, 2, 512);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await big.step(t, 8, 64, { lr: 1e-3 });
    await big.step(t, 8, 64, { lr: 1e-3 });
    clearInterval(timer);
    big.dispose();
    expect(ticks).toBeGreaterThan(2);
  });

  test('terminating a worker thread while its engine is stepping does not crash the process', async () => {
    const { Worker } = await import('node:worker_threads');
    const nativeJs = require('node:path').resolve(__dirname, '..', 'src', 'native.js');
    const code = `
      const { Engine } = require(${JSON.stringify(nativeJs)});
      const { parentPort } = require('node:worker_threads');
      const e = Engine.create({ model: { vocabSize: 512, maxSeqLen: 64, numLayers: 4, numHeads: 4, channels: 128 }, threads: 1 });
      e.step(new Int32Array(8 * 65).fill(3), 8, 64, { lr: 1e-3 }).then(() => {});
      parentPort.postMessage('stepping');`;
    const w = new Worker(code, { eval: true });
    await new Promise((resolve) => w.once('message', resolve));
    await new Promise((r) => setTimeout(r, 30));
    await w.terminate();
    const r = await eng.evalLoss(tokens(1, 8, 2), 1, 8);
    expect(Number.isFinite(r)).toBe(true);
  });
});

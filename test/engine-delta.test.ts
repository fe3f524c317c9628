// Engine.markRoundStart / compressDelta / residual: the outer loop's Δ kept by the engine is, bit for bit, the
// host path (pseudoGradient, then a Compressor with the same residual), across rounds and block sizes; the
// residual saves and loads; bad calls are refused and leave the residual alone. CPU engine here; the CUDA engine
// is held to the same bits in engine-cuda.test.ts and the GPU suite (native/tests/gpu_tests.cu).
import { pseudoGradient } from '../src/diloco/outer-step';
import { Compressor, Engine, Int8Quantized } from '../src/native';
import { ModelConfig, PRESETS } from '../src/train/model-config';
import { firstBitDiff } from './helpers/bits';
import { lcgTokens } from './helpers/tokens';

const model: ModelConfig = { ...PRESETS.tiny, vocabSize: 512 };
const B = 2, T = 32;
const opt = { lr: 3e-3, weightDecay: 0.1, gradClip: 1 };

async function train(eng: Engine, round: number, steps = 2): Promise<void> {
  for (let s = 0; s < steps; s++) await eng.step(lcgTokens(B, T, 1000 * round + s, model.vocabSize), B, T, opt);
}

/** The host path with a residual of its own: a Compressor of this block that starts from `residual`. */
async function hostCompress(start: Float32Array, params: Float32Array, residual: Float32Array, block: number): Promise<{ q: Int8Quantized; residual: Float32Array }> {
  const c = new Compressor(start.length, block);
  c.loadResidual(residual);
  const q = await c.compress(pseudoGradient(start, params));
  return { q, residual: Float32Array.from(c.residual()) };
}

function expectSameBits(got: Int8Quantized, want: Int8Quantized): void {
  expect(firstBitDiff(got.codes, want.codes)).toBe(-1);
  expect(firstBitDiff(got.scales, want.scales)).toBe(-1);
}

async function message(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a rejection');
}

describe('Engine round delta (CPU)', () => {
  let eng: Engine;
  beforeEach(() => {
    eng = Engine.create({ model, threads: 2, seed: 11 });
  });
  afterEach(() => eng.dispose());

  test('compressDelta equals pseudoGradient + Compressor bit for bit over rounds, the residual carried', async () => {
    let hostResidual: Float32Array = new Float32Array(eng.numParams);
    expect(firstBitDiff(eng.residual(), hostResidual)).toBe(-1); // zero before the first round
    for (const [round, block] of [128, 128, 64, 37].entries()) {
      eng.markRoundStart();
      const start = Float32Array.from(eng.params());
      await train(eng, round);
      const want = await hostCompress(start, eng.params(), hostResidual, block);
      const got = await eng.compressDelta(block);
      expect(got.codes.length).toBe(eng.numParams);
      expect(got.scales.length).toBe(Math.ceil(eng.numParams / block));
      expectSameBits(got, want.q);
      expect(got.codes.some((c) => c !== 0)).toBe(true);
      hostResidual = want.residual;
      expect(hostResidual.some((r) => r !== 0)).toBe(true);
      expect(firstBitDiff(eng.residual(), hostResidual)).toBe(-1);
    }
  });

  test('Δ is measured from the latest markRoundStart, which steps do not move', async () => {
    await train(eng, 0);
    eng.markRoundStart();
    const start = Float32Array.from(eng.params());
    await train(eng, 1, 3);
    const want = await hostCompress(start, eng.params(), new Float32Array(eng.numParams), 128);
    expectSameBits(await eng.compressDelta(), want.q); // default block: DEFAULT_QUANT_BLOCK (128)
  });

  test('residual() is a copy; loadResidual and resetResidual round-trip it', async () => {
    eng.markRoundStart();
    await train(eng, 0);
    await eng.compressDelta(64);
    const saved = eng.residual();
    expect(saved).not.toBe(eng.residual());
    const first = saved[0];
    saved[0] = 12345;
    expect(eng.residual()[0]).toBe(first);
    saved[0] = first;

    // A second engine loaded with the saved residual compresses the next round exactly like the first.
    const other = Engine.create({ model, threads: 2, seed: 11 });
    try {
      other.loadParams(eng.params());
      other.loadOptimizerState(eng.adamM(), eng.adamV(), eng.optimizerStep);
      other.loadResidual(saved);
      expect(firstBitDiff(other.residual(), saved)).toBe(-1);
      for (const e of [eng, other]) e.markRoundStart();
      const t = lcgTokens(B, T, 77, model.vocabSize);
      await eng.step(t, B, T, opt);
      await other.step(t, B, T, opt);
      expectSameBits(await other.compressDelta(64), await eng.compressDelta(64));
      expect(firstBitDiff(other.residual(), eng.residual())).toBe(-1);
    } finally {
      other.dispose();
    }

    eng.resetResidual();
    expect(eng.residual().every((r) => Object.is(r, 0))).toBe(true);
    eng.markRoundStart();
    const start = Float32Array.from(eng.params());
    await train(eng, 2);
    const want = await hostCompress(start, eng.params(), new Float32Array(eng.numParams), 64);
    expectSameBits(await eng.compressDelta(64), want.q);
  });

  test('undoCompressDelta puts back the residual from before the last compressDelta, once', async () => {
    expect(eng.undoCompressDelta()).toBe(false); // nothing compressed yet
    eng.markRoundStart();
    await train(eng, 0);
    await eng.compressDelta(64);
    const kept = eng.residual();
    expect(kept.some((r) => r !== 0)).toBe(true);
    // A round that does not commit: Δ compressed again (say for a retry) and given back.
    eng.markRoundStart();
    await train(eng, 1);
    await eng.compressDelta(64);
    expect(firstBitDiff(eng.residual(), kept)).not.toBe(-1);
    expect(eng.undoCompressDelta()).toBe(true);
    expect(firstBitDiff(eng.residual(), kept)).toBe(-1);
    expect(eng.undoCompressDelta()).toBe(false); // only once
    expect(firstBitDiff(eng.residual(), kept)).toBe(-1);
    // The next round compresses from the restored residual exactly like the host path.
    eng.markRoundStart();
    const from = Float32Array.from(eng.params());
    await train(eng, 3);
    const want = await hostCompress(from, eng.params(), kept, 64);
    expectSameBits(await eng.compressDelta(64), want.q);
    // A load or reset leaves nothing to undo.
    eng.loadResidual(kept);
    expect(eng.undoCompressDelta()).toBe(false);
  });

  test('compressDelta before markRoundStart, with a bad block, or while busy is refused', async () => {
    await expect(eng.compressDelta(64)).rejects.toThrow(/call markRoundStart\(\)/);
    eng.markRoundStart();
    await expect(eng.compressDelta(0)).rejects.toThrow(RangeError);
    await expect(eng.compressDelta(0)).rejects.toThrow(/for block/);
    await expect(eng.compressDelta(2.5)).rejects.toThrow(RangeError);
    await expect(eng.compressDelta('64' as unknown as number)).rejects.toThrow(TypeError);
    const step = eng.step(lcgTokens(B, T, 5, model.vocabSize), B, T, opt);
    await expect(eng.compressDelta(64)).rejects.toThrow(/busy/);
    await step;
    expect(eng.residual().every((r) => r === 0)).toBe(true);
  });

  test('loadResidual checks type, length and values, and a refused load changes nothing', async () => {
    eng.markRoundStart();
    await train(eng, 0);
    await eng.compressDelta(64);
    const before = eng.residual();
    expect(() => eng.loadResidual(new Float32Array(3))).toThrow(RangeError);
    expect(() => eng.loadResidual(new Float32Array(3))).toThrow(/residual\.length/);
    expect(() => eng.loadResidual(Array.from(before) as unknown as Float32Array)).toThrow(TypeError);
    const bad = new Float32Array(eng.numParams);
    bad[7] = NaN;
    expect(() => eng.loadResidual(bad)).toThrow(RangeError);
    expect(() => eng.loadResidual(bad)).toThrow(/residual\[7\] = NaN is not finite/);
    expect(firstBitDiff(eng.residual(), before)).toBe(-1);
  });

  test('a non-finite Δ, or Δ + residual overflowing, is refused as by the Compressor and leaves the residual unchanged', async () => {
    eng.markRoundStart();
    const start = Float32Array.from(eng.params());
    await train(eng, 0);
    await eng.compressDelta(64);
    const residual = eng.residual();
    const params = eng.params(); // the CPU engine's zero-copy view
    expect(eng.undoCompressDelta()).toBe(true);
    await eng.compressDelta(64); // the same Δ again: the same residual, and an undo pending
    const keep5 = params[5], keep9 = params[9];

    params[5] = NaN;
    const hostNaN = await message(hostCompress(start, params, residual, 64));
    const engNaN = await message(eng.compressDelta(64));
    expect(engNaN).toMatch(/^delta\[5\] = NaN is not finite/);
    expect(engNaN).toBe(hostNaN.replace(/^input/, 'delta'));
    await expect(eng.compressDelta(64)).rejects.toThrow(RangeError);
    expect(firstBitDiff(eng.residual(), residual)).toBe(-1);
    // The refusal took the pending undo with it: undoing now would not restore the state before the
    // successful compress, so there is nothing to undo.
    expect(eng.undoCompressDelta()).toBe(false);
    expect(firstBitDiff(eng.residual(), residual)).toBe(-1);
    params[5] = keep5;

    // Δ[9] finite, but Δ[9] + residual[9] is past FLT_MAX.
    const big = Float32Array.from(residual);
    big[9] = 3e38;
    eng.loadResidual(big);
    params[9] = start[9] - 3e38;
    const hostOverflow = await message(hostCompress(start, params, big, 64));
    const engOverflow = await message(eng.compressDelta(64));
    expect(engOverflow).toMatch(/^delta\[9\] \+ residual\[9\] overflows fp32/);
    expect(engOverflow).toBe(hostOverflow.replace(/^input/, 'delta'));
    expect(firstBitDiff(eng.residual(), big)).toBe(-1);

    // θ_start survived the refusals: with finite parameters the round compresses as the host does.
    eng.loadResidual(residual);
    params[9] = keep9;
    const want = await hostCompress(start, eng.params(), residual, 64);
    expectSameBits(await eng.compressDelta(64), want.q);
  });

  test('a disposed engine refuses', async () => {
    const e = Engine.create({ model, threads: 1, seed: 1 });
    e.dispose();
    expect(() => e.markRoundStart()).toThrow(/disposed/);
    expect(() => e.residual()).toThrow(/disposed/);
    await expect(e.compressDelta(64)).rejects.toThrow(/disposed/);
  });
});

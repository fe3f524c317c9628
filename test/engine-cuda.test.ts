// Engine.create({ device: 'cuda' }): a clear DEVICE_UNAVAILABLE error where the build has no CUDA backend or
// there is no device; where both exist, a few steps that track the CPU engine (the full 20-step comparison is
// in the GPU suite, native/tests/gpu_tests.cu), and compressDelta bit for bit the CPU engine's and the host
// path's (engine-delta.test.ts holds the CPU engine to the host path).
import { pseudoGradient } from '../src/diloco/outer-step';
import { CovenantError } from '../src/errors';
import { buildInfo, Compressor, Engine } from '../src/native';
import { ModelConfig } from '../src/train/model-config';
import { firstBitDiff } from './helpers/bits';
import { lcgTokens } from './helpers/tokens';

const model: ModelConfig = { vocabSize: 64, maxSeqLen: 32, numLayers: 2, numHeads: 4, channels: 64 };

const tokens = (B: number, T: number, seed: number, V = model.vocabSize): Int32Array => lcgTokens(B, T, seed, V);

// One attempt at a CUDA engine: the engine where a device exists, else the error.
function probe(): { engine?: Engine; error?: unknown } {
  try {
    return { engine: Engine.create({ model, device: 'cuda', seed: 7 }) };
  } catch (error) {
    return { error };
  }
}
const first = probe();
first.engine?.dispose();
const haveDevice = first.engine !== undefined;

describe("Engine on device 'cuda'", () => {
  test('bad device and gemm options are refused before anything is built', () => {
    expect(() => Engine.create({ model, device: 'tpu' as never })).toThrow(RangeError);
    expect(() => Engine.create({ model, device: 'tpu' as never })).toThrow(/device/);
    expect(() => Engine.create({ model, device: 'cuda', gemm: 'packed' })).toThrow(/gemm/);
  });

  (haveDevice ? test.skip : test)('without a CUDA backend or device, a DEVICE_UNAVAILABLE error says which', () => {
    const { error } = probe();
    expect(error).toBeInstanceOf(CovenantError);
    const e = error as CovenantError;
    expect(e.code).toBe('DEVICE_UNAVAILABLE');
    expect(e.message).toMatch(/^device 'cuda' is not available: /);
    if (buildInfo().cuda) {
      // The CUDA runtime's own reason follows, e.g. "no CUDA device: CUDA driver version is insufficient ...".
      expect(e.message).toMatch(/no CUDA device: \S+/);
    } else {
      expect(e.message).toMatch(/this build has no CUDA backend/);
      expect(e.message).toMatch(/HINT/);
    }
    // The CPU engine is unaffected.
    const cpu = Engine.create({ model, threads: 1, seed: 7 });
    expect(cpu.device).toBe('cpu');
    cpu.dispose();
  });

  (haveDevice ? test : test.skip)('a few steps track the CPU engine; params, hash and loads work', async () => {
    expect(buildInfo().cuda).toBe(true);
    const gpu = Engine.create({ model, device: 'cuda', seed: 7 });
    const cpu = Engine.create({ model, threads: 2, seed: 7 });
    try {
      expect(gpu.device).toBe('cuda');
      expect(gpu.numParams).toBe(cpu.numParams);
      expect(gpu.paramsHash()).toBe(cpu.paramsHash());
      const B = 4, T = 32;
      const opt = { lr: 3e-3, weightDecay: 0.1, gradClip: 1 };
      for (let s = 0; s < 5; s++) {
        const t = tokens(B, T, 100 + s);
        const rc = await cpu.step(t, B, T, opt);
        const rg = await gpu.step(t, B, T, opt);
        expect(Math.abs(rg.loss - rc.loss) / rc.loss).toBeLessThanOrEqual(2e-2);
      }
      expect(gpu.optimizerStep).toBe(5);
      const p = gpu.params();
      expect(p.length).toBe(gpu.numParams);
      expect(p.every((x) => Number.isFinite(x))).toBe(true);
      const t = tokens(B, T, 999);
      const lc = await cpu.evalLoss(t, B, T);
      expect(Math.abs((await gpu.evalLoss(t, B, T)) - lc) / lc).toBeLessThanOrEqual(2e-2);
      // Loading the CPU's state makes the hashes equal (the hash is of the downloaded parameter bytes).
      gpu.loadParams(cpu.params());
      gpu.loadOptimizerState(cpu.adamM(), cpu.adamV(), cpu.optimizerStep);
      expect(gpu.paramsHash()).toBe(cpu.paramsHash());
      expect(Array.from(gpu.adamV().subarray(0, 16))).toEqual(Array.from(cpu.adamV().subarray(0, 16)));
      expect((await gpu.generate([1, 2, 3], 4, { temperature: 0 })).length).toBe(4);
    } finally {
      gpu.dispose();
      cpu.dispose();
    }
  });

  (haveDevice ? test : test.skip)('compressDelta agrees bit for bit with the CPU engine and the host path over rounds', async () => {
    const gpu = Engine.create({ model, device: 'cuda', seed: 7 });
    const cpu = Engine.create({ model, threads: 2, seed: 7 });
    try {
      const B = 4, T = 32, block = 64;
      const opt = { lr: 3e-3, weightDecay: 0.1, gradClip: 1 };
      await expect(gpu.compressDelta(block)).rejects.toThrow(/call markRoundStart\(\)/);
      const host = new Compressor(cpu.numParams, block);
      for (let round = 0; round < 3; round++) {
        gpu.loadParams(cpu.params()); // the engines' steps differ in rounding: each round starts equal
        gpu.markRoundStart();
        cpu.markRoundStart();
        const start = Float32Array.from(cpu.params());
        for (let s = 0; s < 2; s++) {
          const t = tokens(B, T, 10 * round + s);
          await cpu.step(t, B, T, opt);
          await gpu.step(t, B, T, opt);
        }
        gpu.loadParams(cpu.params()); // and ends equal, so Δ is too
        const want = await host.compress(pseudoGradient(start, cpu.params()));
        for (const e of [gpu, cpu]) {
          const got = await e.compressDelta(block);
          expect(firstBitDiff(got.codes, want.codes)).toBe(-1);
          expect(firstBitDiff(got.scales, want.scales)).toBe(-1);
          expect(firstBitDiff(e.residual(), host.residual())).toBe(-1);
        }
      }
      const saved = gpu.residual();
      gpu.resetResidual();
      expect(gpu.residual().every((r) => r === 0)).toBe(true);
      gpu.loadResidual(saved);
      expect(firstBitDiff(gpu.residual(), saved)).toBe(-1);
    } finally {
      gpu.dispose();
      cpu.dispose();
    }
  });
});

// Engine.create({ device: 'cuda' }): a clear DEVICE_UNAVAILABLE error where the build has no CUDA backend or
// there is no device; where both exist, a few steps that track the CPU engine (the full 20-step comparison is
// in the GPU suite, native/tests/gpu_tests.cu).
import { CovenantError } from '../src/errors';
import { buildInfo, Engine } from '../src/native';
import { ModelConfig } from '../src/train/model-config';
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
});

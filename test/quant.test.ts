// int8 compression through the TypeScript API: bit-exact agreement with a reference written here in JS
// (float32 arithmetic via Math.fround, which rounds each double result once more: exact for one IEEE
// operation on float32 operands), the error bound, argument errors, non-finite refusal, error feedback,
// and the residual file (save, load, refusal of damaged or mismatched files).
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { types } from 'util';
import {
  Compressor, DEFAULT_QUANT_BLOCK, dequantize, dequantizeAccumulate, quantInfo, quantize, quantizedBytes, quantNumBlocks,
  RESIDUAL_FORMAT,
} from '../src/native';
import { readSafetensors, writeSafetensors } from '../src/train/safetensors';

const F32_MIN = 2 ** -126;
/** Per element: |x - dequant(quant(x))| <= scale * (1/2 + 2^-16) (native/include/covenant/quant.h). */
const BOUND = 0.5 + 2 ** -16;

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-quant-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** xorshift32 Gaussian-ish values (sum of uniforms) with per-block magnitudes over 1e-3..1e3 and zero blocks. */
function data(n: number, seed: number, block = 64): Float32Array {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  const x = new Float32Array(n);
  let mag = 1;
  for (let i = 0; i < n; i++) {
    if (i % block === 0) mag = 10 ** (6 * u() - 3);
    x[i] = (u() + u() + u() + u() - 2) * mag;
  }
  for (let b = 2; b * block < n; b += 9) x.fill(0, b * block, Math.min(n, (b + 1) * block));
  return x;
}

function nextDown(f: number): number {
  const a = new Float32Array([f]);
  new Uint32Array(a.buffer)[0] -= 1;
  return a[0];
}

function refScale(absmax: number): number {
  let s = Math.fround(absmax / 127);
  if (!(s >= F32_MIN)) return 0;
  if (Math.fround(s * 127) === Infinity) s = nextDown(s);
  return s;
}

function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

function refQuantize(x: Float32Array, block: number): { codes: Int8Array; scales: Float32Array } {
  const n = x.length;
  const codes = new Int8Array(n);
  const scales = new Float32Array(Math.ceil(n / block));
  for (let b = 0; b * block < n; b++) {
    const end = Math.min(n, (b + 1) * block);
    let absmax = 0;
    for (let i = b * block; i < end; i++) absmax = Math.max(absmax, Math.abs(x[i]));
    const s = refScale(absmax);
    scales[b] = s;
    if (s === 0) continue;
    for (let i = b * block; i < end; i++) codes[i] = Math.min(127, Math.max(-127, roundHalfEven(Math.fround(x[i] / s))));
  }
  return { codes, scales };
}

function refDequantize(codes: Int8Array, scales: Float32Array, block: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = Math.fround(codes[i] * scales[Math.floor(i / block)]);
  return out;
}

function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('quantize / dequantize', () => {
  test('match the reference bit for bit, on sizes that do not divide by the block and on the pool path', async () => {
    for (const block of [1, 7, 64, DEFAULT_QUANT_BLOCK, 1000]) {
      for (const n of [0, 1, 7, block - 1, block + 1, 3 * block + 5, 300_001]) {
        if (n < 0) continue;
        const x = data(n, 17 + n + block);
        const got = await quantize(x, block);
        const want = refQuantize(x, block);
        expect(types.isInt8Array(got.codes)).toBe(true); // (made by the addon, in another realm under jest)
        expect(types.isFloat32Array(got.scales)).toBe(true);
        expect(got.codes.length).toBe(n);
        expect(got.scales.length).toBe(quantNumBlocks(n, block));
        expect(sameBits(got.codes, want.codes)).toBe(true);
        expect(sameBits(got.scales, want.scales)).toBe(true);
        const back = await dequantize(got.codes, got.scales, block);
        expect(sameBits(back, refDequantize(want.codes, want.scales, block))).toBe(true);
      }
    }
  });

  test('error bound, code range, all-zero blocks', async () => {
    const block = 64;
    const x = data(64 * 500 + 3, 5, block);
    x[7] = 3.4e38; // a block near FLT_MAX: 127 * scale must stay finite
    const { codes, scales } = await quantize(x, block);
    const back = await dequantize(codes, scales, block);
    for (let i = 0; i < x.length; i++) {
      const s = scales[Math.floor(i / block)];
      expect(Number.isFinite(back[i])).toBe(true);
      if (Math.abs(x[i] - back[i]) > s * BOUND) throw new Error(`x[${i}] = ${x[i]}: error ${Math.abs(x[i] - back[i])} > ${s * BOUND}`);
      expect(Math.abs(codes[i])).toBeLessThanOrEqual(127);
    }
    expect(scales[2]).toBe(0); // data() zeroes block 2
    expect(Array.from(codes.subarray(128, 192)).every((c) => c === 0)).toBe(true);
    expect(Array.from(back.subarray(128, 192)).every((v) => v === 0)).toBe(true);
  });

  test('dequantize writes into out; dequantizeAccumulate equals dequantize then add, bit for bit', async () => {
    const block = 100;
    const x = data(123_457, 9, block);
    const { codes, scales } = await quantize(x, block);
    const out = new Float32Array(x.length).fill(NaN);
    expect(await dequantize(codes, scales, block, out)).toBe(out);
    const acc = data(x.length, 10, block);
    const want = acc.map((a, i) => Math.fround(a + out[i]));
    expect(await dequantizeAccumulate(acc, codes, scales, block)).toBe(acc);
    expect(sameBits(acc, want)).toBe(true);
  });

  test('layout helpers and defaults', () => {
    expect(DEFAULT_QUANT_BLOCK).toBe(128);
    expect(quantizedBytes(0)).toBe(0);
    expect(quantizedBytes(1, 64)).toBe(5);
    expect(quantizedBytes(129, 64)).toBe(129 + 3 * 4);
    expect(quantNumBlocks(1000, 128)).toBe(8);
    expect(['avx512', 'avx2', 'scalar']).toContain(quantInfo().isa);
  });

  test('argument errors name the argument', async () => {
    const x = new Float32Array(10);
    await expect(quantize([1, 2] as unknown as Float32Array)).rejects.toThrow(TypeError);
    await expect(quantize([1, 2] as unknown as Float32Array)).rejects.toThrow(/for x/);
    await expect(quantize(x, 0)).rejects.toThrow(RangeError);
    await expect(quantize(x, 1.5)).rejects.toThrow(/for block/);
    await expect(quantize(x, '64' as unknown as number)).rejects.toThrow(TypeError);
    const { codes, scales } = await quantize(x, 4);
    await expect(dequantize(new Uint8Array(10) as unknown as Int8Array, scales, 4)).rejects.toThrow(/Int8Array for codes/);
    await expect(dequantize(codes, new Float32Array(2), 4)).rejects.toThrow(/scales to hold .* = 3 values but it holds 2/);
    await expect(dequantize(codes, scales, 4, new Float32Array(9))).rejects.toThrow(/out\.length/);
    const shared = new Float32Array(20);
    await expect(dequantize(codes, shared.subarray(0, 3), 4, shared.subarray(2, 12))).rejects.toThrow(/out must not share memory/);
    await expect(dequantizeAccumulate(new Float32Array(11), codes, scales, 4)).rejects.toThrow(/acc\.length/);
    await expect(dequantizeAccumulate(new Float64Array(10) as unknown as Float32Array, codes, scales, 4)).rejects.toThrow(/Float32Array for acc/);
  });

  test('non-finite input is refused with the index of the first bad element', async () => {
    const x = data(300_000, 3);
    x[250_000] = -Infinity;
    x[123_457] = NaN;
    await expect(quantize(x, 64)).rejects.toThrow(RangeError);
    await expect(quantize(x, 64)).rejects.toThrow(/x\[123457\] = NaN is not finite/);
    await expect(quantize(Float32Array.from([1, Infinity]), 64)).rejects.toThrow(/x\[1\] = Infinity/);
    const codes = new Int8Array(8).fill(1);
    const acc = new Float32Array(8).fill(2);
    await expect(dequantizeAccumulate(acc, codes, Float32Array.from([1, NaN]), 4)).rejects.toThrow(/scales\[1\] = NaN is not a valid scale/);
    await expect(dequantize(codes, Float32Array.from([-1, 1]), 4)).rejects.toThrow(RangeError);
    expect(Array.from(acc)).toEqual(new Array(8).fill(2)); // untouched
  });
});

describe('Compressor (error feedback)', () => {
  test('compress = quantize(input + residual), residual = (input + residual) - dequant', async () => {
    const block = 64;
    const n = 70_001;
    const c = new Compressor(n, block);
    expect(c.n).toBe(n);
    expect(c.block).toBe(block);
    const view = c.residual();
    let r = new Float32Array(n);
    for (let round = 0; round < 3; round++) {
      const x = data(n, 30 + round, block);
      const v = x.map((xi, i) => Math.fround(xi + r[i]));
      const want = refQuantize(v, block);
      const got = await c.compress(x);
      expect(sameBits(got.codes, want.codes)).toBe(true);
      expect(sameBits(got.scales, want.scales)).toBe(true);
      const d = refDequantize(want.codes, want.scales, block);
      r = v.map((vi, i) => Math.fround(vi - d[i]));
      expect(sameBits(c.residual(), r)).toBe(true);
      expect(sameBits(view, r)).toBe(true); // the view is zero-copy
    }
    c.reset();
    expect(c.residual().every((v) => v === 0)).toBe(true);
  });

  test('the running mean of the decompressed outputs converges to the input', async () => {
    // Over R rounds of the same x: sum of dequant_r = R*x - residual_R (the subtraction v - dequant is exact by
    // Sterbenz's lemma; only v = x + r rounds, by at most 127 * scale * 2^-24 per round), and
    // |residual_R| <= scale * (1/2 + 2^-16). So |mean - x| <= scale * (1/2 + 2^-16) / R + 127 * scale * 2^-24.
    // Without error feedback the mean stays at dequant(quant(x)), up to scale/2 away.
    const block = 64;
    const R = 200;
    const x = data(4096 + 7, 60, block);
    const n = x.length;
    const c = new Compressor(n, block);
    const sum = new Float64Array(n);
    const smax = new Float32Array(quantNumBlocks(n, block));
    for (let round = 0; round < R; round++) {
      const { codes, scales } = await c.compress(x);
      const d = await dequantize(codes, scales, block);
      for (let i = 0; i < n; i++) sum[i] += d[i];
      scales.forEach((s, b) => (smax[b] = Math.max(smax[b], s)));
    }
    const plain = refDequantize(refQuantize(x, block).codes, refQuantize(x, block).scales, block);
    let worstEf = 0;
    let worstPlain = 0;
    for (let i = 0; i < n; i++) {
      const s = smax[Math.floor(i / block)];
      if (s === 0) continue;
      const err = Math.abs(sum[i] / R - x[i]);
      const bound = (s * BOUND) / R + 127 * s * 2 ** -24;
      if (err > bound) throw new Error(`x[${i}]: |mean - x| = ${err} > ${bound}`);
      worstEf = Math.max(worstEf, err / s);
      worstPlain = Math.max(worstPlain, Math.abs(plain[i] - x[i]) / s);
    }
    expect(worstEf).toBeLessThan(0.5 / R + 1e-5);
    expect(worstPlain).toBeGreaterThan(0.4); // quantization alone keeps its error
  });

  test('non-finite input is refused and the residual is left unchanged', async () => {
    const c = new Compressor(100_003, 64);
    await c.compress(data(100_003, 1));
    const before = Float32Array.from(c.residual());
    const bad = data(100_003, 2);
    bad[99_000] = Infinity;
    bad[77_777] = NaN;
    await expect(c.compress(bad)).rejects.toThrow(/input\[77777\] = NaN is not finite/);
    expect(sameBits(c.residual(), before)).toBe(true);
    // A finite input that overflows with the residual.
    const r = new Float32Array(100_003);
    r[5] = 3e38;
    c.loadResidual(r);
    const big = new Float32Array(100_003).fill(1);
    big[5] = 3e38;
    await expect(c.compress(big)).rejects.toThrow(/input\[5\] \+ residual\[5\] overflows/);
    expect(sameBits(c.residual(), r)).toBe(true);
    r[9] = NaN;
    expect(() => c.loadResidual(r)).toThrow(/residual\[9\] = NaN is not finite/);
    expect(c.residual()[9]).toBe(0);
  });

  test('argument errors and one call at a time', async () => {
    expect(() => new Compressor(-1)).toThrow(RangeError);
    expect(() => new Compressor('10' as unknown as number)).toThrow(TypeError);
    expect(() => new Compressor(10, 0)).toThrow(/for block/);
    const c = new Compressor(300_000, 64);
    await expect(c.compress(new Float32Array(5))).rejects.toThrow(/input\.length/);
    await expect(c.compress(new Int8Array(300_000) as unknown as Float32Array)).rejects.toThrow(/Float32Array for input/);
    expect(() => c.loadResidual(new Float32Array(3))).toThrow(/residual\.length/);
    const first = c.compress(data(300_000, 4));
    await expect(c.compress(data(300_000, 5))).rejects.toThrow(/busy with compress/);
    expect(() => c.reset()).toThrow(/busy/);
    await expect(c.save(path.join(tmp, 'r.safetensors'))).rejects.toThrow(/busy/);
    await first;
    c.reset();
  });
});

describe('residual files', () => {
  async function trained(n: number, block: number): Promise<Compressor> {
    const c = new Compressor(n, block);
    for (let i = 0; i < 3; i++) await c.compress(data(n, 80 + i, block));
    return c;
  }

  test('save then load gives the same residual and the same next output', async () => {
    const file = path.join(tmp, 'residual.safetensors');
    const a = await trained(10_007, 128);
    await a.save(file);
    expect(fs.readdirSync(tmp)).toEqual(['residual.safetensors']); // no temp file left behind
    const { metadata, tensors } = await readSafetensors(file);
    expect(metadata).toMatchObject({ format: RESIDUAL_FORMAT, version: '1', n: '10007', block: '128' });
    expect(metadata.residual_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(tensors.get('residual')?.shape).toEqual([10_007]);

    const b = await Compressor.load(file);
    expect([b.n, b.block]).toEqual([10_007, 128]);
    expect(sameBits(b.residual(), a.residual())).toBe(true);
    const c = new Compressor(10_007, 128);
    await c.loadFrom(file);
    expect(sameBits(c.residual(), a.residual())).toBe(true);
    const x = data(10_007, 99, 128);
    const [oa, ob] = [await a.compress(x), await b.compress(x)];
    expect(sameBits(oa.codes, ob.codes) && sameBits(oa.scales, ob.scales)).toBe(true);
    expect(sameBits(a.residual(), b.residual())).toBe(true);

    const empty = path.join(tmp, 'empty.safetensors');
    await new Compressor(0, 64).save(empty);
    expect((await Compressor.load(empty)).n).toBe(0);
  });

  test('damaged, foreign and mismatched files are refused, naming the file, and the residual is kept', async () => {
    const file = path.join(tmp, 'residual.safetensors');
    const a = await trained(1000, 64);
    await a.save(file);
    const good = fs.readFileSync(file);
    const c = new Compressor(1000, 64);
    c.loadResidual(Float32Array.from(a.residual(), (v) => v * 0.5));
    const kept = Float32Array.from(c.residual());
    const expectRefused = async (bytes: Buffer, code: string, pattern: RegExp) => {
      const f = path.join(tmp, 'bad.safetensors');
      fs.writeFileSync(f, bytes);
      await expect(c.loadFrom(f)).rejects.toMatchObject({ code });
      await expect(c.loadFrom(f)).rejects.toThrow(pattern);
      await expect(c.loadFrom(f)).rejects.toThrow(f);
      expect(sameBits(c.residual(), kept)).toBe(true);
    };

    const flipped = Buffer.from(good);
    flipped[flipped.length - 10] ^= 0x40; // a bit in the residual data
    await expectRefused(flipped, 'CHECKPOINT_CORRUPT', /SHA-256 .* \(corrupted data\)/);
    await expectRefused(good.subarray(0, good.length - 4), 'CHECKPOINT_CORRUPT', /truncated/);
    await expectRefused(Buffer.from('not a safetensors file'), 'CHECKPOINT_CORRUPT', /invalid/);

    // Well-formed safetensors that are not (valid) residual files.
    const write = async (meta: Record<string, string>, data: Float32Array = a.residual()) => {
      const f = path.join(tmp, 'crafted.safetensors');
      await writeSafetensors(f, [{ name: 'residual', dtype: 'F32', shape: [data.length], data }], meta);
      return fs.readFileSync(f);
    };
    const sha = (await readSafetensors(file)).metadata.residual_sha256;
    await expectRefused(await write({ format: 'covenant-checkpoint', version: '1', n: '1000', block: '64', residual_sha256: sha }), 'CHECKPOINT_CORRUPT', /not a residual file/);
    await expectRefused(await write({ format: RESIDUAL_FORMAT, version: '1', n: '1000', block: '0', residual_sha256: sha }), 'CHECKPOINT_CORRUPT', /__metadata__\.block/);
    await expectRefused(await write({ format: RESIDUAL_FORMAT, version: '1', n: '999', block: '64', residual_sha256: sha }), 'CHECKPOINT_CORRUPT', /expected F32 \[999\]/);
    await expectRefused(await write({ format: RESIDUAL_FORMAT, version: '1', n: '1000', block: '64' }), 'CHECKPOINT_CORRUPT', /residual_sha256 is missing/);
    const nan = Float32Array.from(a.residual());
    nan[3] = NaN;
    const nanSha = createHash('sha256').update(Buffer.from(nan.buffer)).digest('hex');
    await expectRefused(await write({ format: RESIDUAL_FORMAT, version: '1', n: '1000', block: '64', residual_sha256: nanSha }, nan), 'CHECKPOINT_CORRUPT', /residual\[3\] = NaN/);

    // A valid file of another shape or block size.
    const other = new Compressor(1000, 128);
    await expect(other.loadFrom(file)).rejects.toMatchObject({ code: 'RESIDUAL_MISMATCH' });
    await expect(other.loadFrom(file)).rejects.toThrow(`Residual file ${file} holds n = 1000, block = 64 but this compressor has n = 1000, block = 128`);
    await expect(new Compressor(999, 64).loadFrom(file)).rejects.toMatchObject({ code: 'RESIDUAL_MISMATCH' });
    await expect(Compressor.load(path.join(tmp, 'missing.safetensors'))).rejects.toMatchObject({ code: 'ENOENT' });
    await c.loadFrom(file); // the undamaged file still loads
    expect(sameBits(c.residual(), a.residual())).toBe(true);
  });
});

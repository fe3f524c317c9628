// Tests for checkpoints: bit-identical round trip with moments, Hugging Face names and transposed shapes,
// and refusal of tampered, truncated or malformed files.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { checkpointTensors, decodeCheckpoint, encodeCheckpoint, loadCheckpoint, paramsSha256, saveCheckpoint } from '../src/train/checkpoint';
import { ModelConfig } from '../src/train/model-config';
import { numParams, paramLayout } from '../src/train/param-layout';
import { encodeSafetensors, readSafetensors } from '../src/train/safetensors';

const cfg: ModelConfig = { vocabSize: 50, maxSeqLen: 8, numLayers: 2, numHeads: 2, channels: 8 };
const N = numParams(cfg);

/** Deterministic pseudo-random fp32 values, including awkward ones (NaN payloads, -0, subnormals). */
function values(seed: number): Float32Array {
  const a = new Float32Array(N);
  let x = seed >>> 0;
  for (let i = 0; i < N; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = (x / 2 ** 32 - 0.5) * 4;
  }
  const bits = new Uint32Array(a.buffer);
  bits[3] = 0x7fc01234; // NaN with a payload
  bits[5] = 0x80000000; // -0
  bits[7] = 0x00000001; // smallest subnormal
  return a;
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-ckpt-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function sameBits(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))).toBe(true);
}

async function expectCorrupt(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await expect(p).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringMatching(pattern) });
}

test('round trip is bit-identical, with moments, step and extra metadata', async () => {
  const file = path.join(tmp, 'ckpt.safetensors');
  const params = values(1);
  const adamM = values(2);
  const adamV = values(3);
  await saveCheckpoint(file, { model: cfg, params, adamM, adamV, step: 1234, extra: { round: '7', sync_hash: 'abc' } });
  const got = await loadCheckpoint(file);
  expect(got.model).toEqual(cfg);
  expect(got.step).toBe(1234);
  sameBits(got.params, params);
  sameBits(got.adamM!, adamM);
  sameBits(got.adamV!, adamV);
  expect(got.extra).toEqual({ round: '7', sync_hash: 'abc' });
  expect(got.metadata.format).toBe('covenant-checkpoint');
  expect(got.metadata.version).toBe('1');
  expect(got.metadata.params_sha256).toBe(paramsSha256(params));
  expect(JSON.parse(got.metadata.model)).toEqual(cfg);
  // In memory too.
  sameBits(decodeCheckpoint(fs.readFileSync(file)).params, params);
});

test('without moments', async () => {
  const file = path.join(tmp, 'p.safetensors');
  await saveCheckpoint(file, { model: cfg, params: values(4), step: 0 });
  const got = await loadCheckpoint(file);
  expect(got.adamM).toBeUndefined();
  expect(got.adamV).toBeUndefined();
  sameBits(got.params, values(4));
});

test('Hugging Face GPT-2 names, transposed Conv1D weights', async () => {
  const file = path.join(tmp, 'hf.safetensors');
  const params = values(5);
  await saveCheckpoint(file, { model: cfg, params, adamM: values(6), adamV: values(7), step: 1 });
  const { tensors } = await readSafetensors(file);
  const C = 8;
  const shapes: Record<string, number[]> = {
    'wte.weight': [50, C],
    'wpe.weight': [8, C],
    'ln_f.weight': [C],
    'ln_f.bias': [C],
    'covenant.adam_m': [N],
    'covenant.adam_v': [N],
  };
  for (const i of [0, 1]) {
    Object.assign(shapes, {
      [`h.${i}.ln_1.weight`]: [C],
      [`h.${i}.ln_1.bias`]: [C],
      [`h.${i}.attn.c_attn.weight`]: [C, 3 * C],
      [`h.${i}.attn.c_attn.bias`]: [3 * C],
      [`h.${i}.attn.c_proj.weight`]: [C, C],
      [`h.${i}.attn.c_proj.bias`]: [C],
      [`h.${i}.ln_2.weight`]: [C],
      [`h.${i}.ln_2.bias`]: [C],
      [`h.${i}.mlp.c_fc.weight`]: [C, 4 * C],
      [`h.${i}.mlp.c_fc.bias`]: [4 * C],
      [`h.${i}.mlp.c_proj.weight`]: [4 * C, C],
      [`h.${i}.mlp.c_proj.bias`]: [C],
    });
  }
  expect([...tensors.keys()].sort()).toEqual(Object.keys(shapes).sort());
  for (const [name, shape] of Object.entries(shapes)) expect([name, tensors.get(name)!.shape]).toEqual([name, shape]);

  // Element (in, out) of HF c_attn in layer 1 is our qkvw[1][out][in].
  const qkvw = paramLayout(cfg).find((t) => t.name === 'qkvw')!;
  const hf = tensors.get('h.1.attn.c_attn.weight')!.data as Float32Array;
  for (const [inp, out] of [[0, 0], [3, 17], [7, 23], [5, 2]]) {
    expect(hf[inp * 3 * C + out]).toBe(params[qkvw.offset + C * 3 * C + out * C + inp]);
  }
  // Element (in, out) of HF mlp.c_proj in layer 0 is our fcprojw[0][out][in] (ours is (C, 4C)).
  const fcprojw = paramLayout(cfg).find((t) => t.name === 'fcprojw')!;
  const proj = tensors.get('h.0.mlp.c_proj.weight')!.data as Float32Array;
  expect(proj[29 * C + 6]).toBe(params[fcprojw.offset + 6 * 4 * C + 29]);
  // Untransposed tensors are straight slices.
  const ln2b = paramLayout(cfg).find((t) => t.name === 'ln2b')!;
  expect(Array.from(tensors.get('h.1.ln_2.bias')!.data)).toEqual(Array.from(params.subarray(ln2b.offset + C, ln2b.offset + 2 * C)));
  expect(checkpointTensors(cfg).reduce((a, t) => a + t.rows * t.cols, 0)).toBe(N);
});

test('paramsSha256 is the SHA-256 of the flat little-endian bytes', () => {
  const p = values(8);
  expect(paramsSha256(p)).toBe(createHash('sha256').update(Buffer.from(p.buffer)).digest('hex'));
  expect(paramsSha256(p.subarray(1))).toBe(createHash('sha256').update(Buffer.from(p.buffer, 4)).digest('hex'));
});

test('tampered tensor data is detected by the hash', async () => {
  const file = path.join(tmp, 'x.safetensors');
  await saveCheckpoint(file, { model: cfg, params: values(9), adamM: values(10), adamV: values(11), step: 5 });
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString());
  const [begin] = header['h.0.mlp.c_fc.weight'].data_offsets;
  const tampered = Buffer.from(buf);
  tampered[8 + n + begin + 13] ^= 0x40;
  fs.writeFileSync(file, tampered);
  await expectCorrupt(loadCheckpoint(file), /SHA-256 is [0-9a-f]{64} but __metadata__.params_sha256 says/);
  // A flipped moment is caught too.
  const [mBegin] = header['covenant.adam_v'].data_offsets;
  const tamperedV = Buffer.from(buf);
  tamperedV[8 + n + mBegin + 1] ^= 0x01;
  expect(() => decodeCheckpoint(tamperedV, 'v')).toThrow(/optimizer_sha256/);
});

test('truncated checkpoints are refused', async () => {
  const file = path.join(tmp, 't.safetensors');
  await saveCheckpoint(file, { model: cfg, params: values(12), step: 5 });
  const size = fs.statSync(file).size;
  fs.truncateSync(file, size - 100);
  await expectCorrupt(loadCheckpoint(file), /truncated/);
  fs.truncateSync(file, 4);
  await expectCorrupt(loadCheckpoint(file), /fewer than the 8-byte header/);
});

test('malformed metadata, model config or tensors are refused', () => {
  const good = encodeCheckpoint({ model: cfg, params: values(13), step: 2 });
  const n = Number(good[0].readBigUInt64LE(0));
  const header = JSON.parse(good[1].subarray(0, n).toString());
  const rebuild = (edit: (md: Record<string, string>, tensors: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[]) => void): Buffer => {
    const md = { ...header.__metadata__ };
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const tensors = names.map((name, i) => ({ name, dtype: 'F32' as const, shape: header[name].shape, data: new Float32Array(good[2 + i].buffer, good[2 + i].byteOffset, good[2 + i].byteLength / 4) }));
    edit(md, tensors);
    return Buffer.concat(encodeSafetensors(tensors, md));
  };
  expect(() => decodeCheckpoint(rebuild(() => {}))).not.toThrow();
  expect(() => decodeCheckpoint(rebuild((md) => (md.model = JSON.stringify({ ...cfg, numHeads: 3 }))))).toThrow(/model config.*divisible/);
  expect(() => decodeCheckpoint(rebuild((md) => (md.model = '{not json')))).toThrow(/__metadata__.model is not a valid model config/);
  expect(() => decodeCheckpoint(rebuild((md) => (md.format = 'other')))).toThrow(/not a covenant checkpoint/);
  expect(() => decodeCheckpoint(rebuild((md) => (md.step = '-1')))).toThrow(/__metadata__.step/);
  expect(() => decodeCheckpoint(rebuild((md, ts) => ts.splice(ts.findIndex((t) => t.name === 'h.1.ln_1.bias'), 1)))).toThrow(/tensor h.1.ln_1.bias is missing/);
  expect(() => decodeCheckpoint(rebuild((md, ts) => ts.push({ name: 'h.2.ln_1.bias', dtype: 'F32', shape: [8], data: new Float32Array(8) })))).toThrow(/h.2.ln_1.bias/);
  expect(() =>
    decodeCheckpoint(
      rebuild((md, ts) => {
        const t = ts.find((x) => x.name === 'h.0.attn.c_proj.weight')!;
        t.shape = [4, 16];
      }),
    ),
  ).toThrow(/h.0.attn.c_proj.weight has shape \[4, 16\], expected \[8, 8\]/);
  try {
    decodeCheckpoint(rebuild((md) => (md.model = '{}')));
  } catch (e) {
    expect((e as { code?: string }).code).toBe('CHECKPOINT_CORRUPT');
  }
});

test('saving checks its arguments', async () => {
  const file = path.join(tmp, 'bad.safetensors');
  await expect(saveCheckpoint(file, { model: cfg, params: new Float32Array(N - 1), step: 0 })).rejects.toThrow(/params.length/);
  await expect(saveCheckpoint(file, { model: cfg, params: values(1), adamM: values(2), step: 0 })).rejects.toThrow(/both or neither/);
  await expect(saveCheckpoint(file, { model: cfg, params: values(1), step: -1 })).rejects.toThrow(/checkpoint.step/);
  await expect(saveCheckpoint(file, { model: cfg, params: values(1), step: 0, extra: { step: '9' } })).rejects.toThrow(/reserved/);
  expect(fs.existsSync(file)).toBe(false);
});

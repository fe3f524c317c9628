// The only importer of the native addon: typed wrappers around it, with every argument checked here
// first so that a bad call throws a TypeError/RangeError naming the argument instead of reaching C++.
import { types } from 'node:util';
import path from 'node:path';
import { invalidParameter, ModelConfig, parseModelConfig } from './train/model-config';

interface NativeEngineHandle {
  numParams(): number;
  threads(): number;
  tensors(): Array<{ name: string; offset: number; size: number; decay: boolean }>;
  view(which: 'params' | 'grads' | 'adamM' | 'adamV'): Float32Array;
  loadParams(which: 'params' | 'adamM' | 'adamV', src: Float32Array): void;
  adamStep(): number;
  setAdamStep(t: number): void;
  paramsHash(): string;
  device(): Device;
  step(tokens: Int32Array, B: number, T: number, opt: OptimizerSettings): Promise<StepResult>;
  forwardBackward(tokens: Int32Array, B: number, T: number): Promise<{ loss: number }>;
  evalLoss(tokens: Int32Array, B: number, T: number): Promise<number>;
  logits(tokens: Int32Array, B: number, T: number): Promise<Float32Array>;
  generate(prompt: Int32Array, maxNew: number, temperature: number, topK: number, seed: number): Promise<Int32Array>;
  markRoundStart(): void;
  compressDelta(block: number): Promise<Int8Quantized>;
  residual(): Float32Array;
  loadResidual(r: Float32Array): void;
  resetResidual(): void;
  undoCompressDelta(): boolean;
  dispose(): void;
}

export interface BuildInfo {
  blas: boolean;
  blasInfo: string;
  gemmDefault: 'blas' | 'packed';
  packedIsa: string;
  hardwareThreads: number;
  /** The CRC-32C the all-reduce frames use on this CPU: 'vpclmulqdq' (AVX-512), 'sse4.2' or 'portable'. */
  crc32c: 'vpclmulqdq' | 'sse4.2' | 'portable';
  /** Built with the CUDA backend (a device may still be missing: Engine.create({device:'cuda'}) says). */
  cuda: boolean;
  /** GEMMs of the CUDA engine: 'cublas', 'own' (our kernel, where cuBLAS was not found) or 'none'. */
  cudaGemm: 'cublas' | 'own' | 'none';
}

interface Addon {
  NativeEngine: new (model: ModelConfig, threads: number, seed: number, attention: string, gemm: string, device: Device) => NativeEngineHandle;
  buildInfo(): BuildInfo;
  allReduceStart(
    tensor: Float32Array,
    opts: { rank: number; peers: Array<{ host: string; port: number }>; listen?: { host: string; port: number }; mode: string; blockSize: number; timeoutMs: number; round: number; attempt: number; secret: string | Buffer; sliceBytes: number; transcripts: boolean },
  ): { promise: Promise<AllReduceResult>; abort(): void };
}

let addon: Addon | undefined;
function load(): Addon {
  if (addon) return addon;
  const file = path.resolve(__dirname, '..', '..', 'build', 'Release', 'covenant.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    addon = require(file) as Addon;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`cannot load the native addon ${file}: ${msg}. HINT: run \`npm run build:native\` (or \`npm ci\`)`);
  }
  return addon;
}

export function buildInfo(): BuildInfo {
  return load().buildInfo();
}

export interface OptimizerSettings {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm clip; 0 disables. */
  gradClip?: number;
}

export interface StepResult {
  loss: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
}

export type Attention = 'flash' | 'naive';
export type GemmBackend = 'auto' | 'blas' | 'packed' | 'ref';
export type Device = 'cpu' | 'cuda';

export interface EngineOptions {
  model: ModelConfig;
  /**
   * 'cpu' (default) or 'cuda': the CUDA engine (fp32 master weights, gradients and AdamW state in device
   * memory; README "On a CUDA device"). 'cuda' throws a CovenantError with code DEVICE_UNAVAILABLE when the
   * build has no CUDA backend or no device is visible; threads does not apply to it and gemm must be 'auto'.
   */
  device?: Device;
  /** Compute threads (one fixed pool shared by every kernel); default: all hardware threads. */
  threads?: number;
  /** Seed of the weight initialization. */
  seed?: number;
  attention?: Attention;
  gemm?: GemmBackend;
}

export interface GenerateOptions {
  /** 0 means greedy. Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens; 0 means all. Default 40. */
  topK?: number;
  seed?: number;
}

function checkInt(name: string, v: unknown, lo: number, hi = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number') throw new TypeError(invalidParameter(name, `an integer in [${lo}, ${hi}]`, v));
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(invalidParameter(name, `an integer in [${lo}, ${hi}]`, v));
  return v;
}

function checkFinite(name: string, v: unknown, lo = -Infinity, hi = Infinity): number {
  if (typeof v !== 'number') throw new TypeError(invalidParameter(name, 'a finite number', v));
  if (!Number.isFinite(v) || v < lo || v > hi) throw new RangeError(invalidParameter(name, `a finite number in [${lo}, ${hi}]`, v));
  return v;
}

/** A GPT-2 training engine on native memory. Calls that compute return promises and run off the event loop. */
export class Engine {
  readonly model: ModelConfig;
  readonly device: Device;
  readonly numParams: number;
  readonly threads: number;
  readonly attention: Attention;
  private handle: NativeEngineHandle | undefined;

  private constructor(model: ModelConfig, handle: NativeEngineHandle, attention: Attention) {
    this.model = model;
    this.handle = handle;
    this.device = handle.device();
    this.numParams = handle.numParams();
    this.threads = handle.threads();
    this.attention = attention;
  }

  static create(opts: EngineOptions): Engine {
    if (typeof opts !== 'object' || opts === null) throw new TypeError(invalidParameter('opts', 'an object', opts));
    const model = parseModelConfig(opts.model, 'model');
    const device = opts.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new RangeError(invalidParameter('device', "'cpu' or 'cuda'", device));
    const threads = opts.threads === undefined ? 0 : checkInt('threads', opts.threads, 1, 1024);
    const seed = opts.seed === undefined ? 0 : checkInt('seed', opts.seed, 0, 2147483647);
    const attention = opts.attention ?? 'flash';
    if (attention !== 'flash' && attention !== 'naive') throw new RangeError(invalidParameter('attention', "'flash' or 'naive'", attention));
    const gemm = opts.gemm ?? 'auto';
    if (!['auto', 'blas', 'packed', 'ref'].includes(gemm)) throw new RangeError(invalidParameter('gemm', "'auto', 'blas', 'packed' or 'ref'", gemm));
    if (device === 'cuda' && gemm !== 'auto') {
      throw new RangeError(invalidParameter('gemm', "'auto' with device 'cuda' (cuBLAS or the CUDA engine's own GEMM)", gemm));
    }
    const A = load();
    if (device === 'cuda' && !A.buildInfo().cuda) {
      throw new CovenantError(
        'DEVICE_UNAVAILABLE',
        "device 'cuda' is not available: this build has no CUDA backend. HINT: install the CUDA toolkit (nvcc) and rebuild with `npm run build:native`, or use device 'cpu'",
      );
    }
    let handle: NativeEngineHandle;
    try {
      handle = new A.NativeEngine(model, threads, seed, attention, gemm, device);
    } catch (e) {
      // Not `instanceof Error`: errors made by the addon may come from another realm (as under jest).
      const m = typeof e === 'object' && e !== null ? (e as { message?: unknown }).message : undefined;
      const msg = typeof m === 'string' ? m : String(e);
      if (device === 'cuda' && msg.startsWith("device 'cuda' is not available")) {
        throw new CovenantError('DEVICE_UNAVAILABLE', msg, { cause: e });
      }
      throw e;
    }
    return new Engine(model, handle, attention);
  }

  private live(): NativeEngineHandle {
    if (!this.handle) throw new Error('Engine is disposed: create a new one with Engine.create()');
    return this.handle;
  }

  private checkTokens(name: string, tokens: unknown, B: number, T: number, rowLen: number): Int32Array {
    checkInt('B', B, 1, 1 << 20);
    checkInt('T', T, 1, this.model.maxSeqLen);
    if (!types.isInt32Array(tokens)) {
      throw new TypeError(invalidParameter(name, 'an Int32Array', tokens));
    }
    const want = B * rowLen;
    if (tokens.length !== want) {
      throw new RangeError(`Expected ${name} to hold B*${rowLen === T ? 'T' : '(T+1)'} = ${want} tokens but it holds ${tokens.length}`);
    }
    const V = this.model.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i];
      if (id < 0 || id >= V) {
        throw new RangeError(`${name}[${i}] = ${id} is outside the vocabulary [0, ${V}) (model.vocabSize ${V})`);
      }
    }
    return tokens;
  }

  private checkOptimizer(opt: unknown): OptimizerSettings {
    if (typeof opt !== 'object' || opt === null) throw new TypeError(invalidParameter('opt', 'an object with lr', opt));
    const o = opt as Record<string, unknown>;
    const known = ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'gradClip'];
    for (const k of Object.keys(o)) if (!known.includes(k)) throw new TypeError(`Unknown field opt.${k} (known: ${known.join(', ')})`);
    const out: OptimizerSettings = { lr: checkFinite('opt.lr', o.lr, 0) };
    if (o.beta1 !== undefined) out.beta1 = checkFinite('opt.beta1', o.beta1, 0, 0.999999);
    if (o.beta2 !== undefined) out.beta2 = checkFinite('opt.beta2', o.beta2, 0, 0.999999);
    if (o.eps !== undefined) out.eps = checkFinite('opt.eps', o.eps, 0);
    if (o.weightDecay !== undefined) out.weightDecay = checkFinite('opt.weightDecay', o.weightDecay, 0);
    if (o.gradClip !== undefined) out.gradClip = checkFinite('opt.gradClip', o.gradClip, 0);
    return out;
  }

  /** One training step on tokens (B, T+1): forward, backward, global-norm clipping, AdamW. */
  async step(tokens: Int32Array, B: number, T: number, opt: OptimizerSettings): Promise<StepResult> {
    const h = this.live();
    this.checkTokens('tokens', tokens, B, T, T + 1);
    const o = this.checkOptimizer(opt);
    const where = new Error();
    return h.step(tokens, B, T, o).catch((e: unknown) => rethrow(e, where));
  }

  /** Gradients of the mean loss on tokens (B, T+1) into grads(), without an update. */
  async forwardBackward(tokens: Int32Array, B: number, T: number): Promise<{ loss: number }> {
    const h = this.live();
    this.checkTokens('tokens', tokens, B, T, T + 1);
    const where = new Error();
    return h.forwardBackward(tokens, B, T).catch((e: unknown) => rethrow(e, where));
  }

  /** Mean cross-entropy on tokens (B, T+1), no gradients. */
  async evalLoss(tokens: Int32Array, B: number, T: number): Promise<number> {
    const h = this.live();
    this.checkTokens('tokens', tokens, B, T, T + 1);
    const where = new Error();
    return h.evalLoss(tokens, B, T).catch((e: unknown) => rethrow(e, where));
  }

  /** Logits (B, T, V) for inputs (B, T). */
  async logits(inputs: Int32Array, B: number, T: number): Promise<Float32Array> {
    const h = this.live();
    this.checkTokens('inputs', inputs, B, T, T);
    const where = new Error();
    return h.logits(inputs, B, T).catch((e: unknown) => rethrow(e, where));
  }

  /** Samples maxNewTokens tokens after the prompt (the context is cropped to the last maxSeqLen tokens). */
  async generate(prompt: ArrayLike<number>, maxNewTokens: number, opts: GenerateOptions = {}): Promise<number[]> {
    const h = this.live();
    if (prompt === null || typeof prompt !== 'object' || typeof prompt.length !== 'number') {
      throw new TypeError(invalidParameter('prompt', 'an array of token ids', prompt));
    }
    if (prompt.length === 0) throw new RangeError('prompt must hold at least one token');
    const p = Int32Array.from(prompt);
    const V = this.model.vocabSize;
    p.forEach((id, i) => {
      if (!Number.isInteger(prompt[i]) || id < 0 || id >= V) throw new RangeError(`prompt[${i}] = ${prompt[i]} is outside the vocabulary [0, ${V})`);
    });
    checkInt('maxNewTokens', maxNewTokens, 0, 1 << 20);
    const temperature = checkFinite('temperature', opts.temperature ?? 1, 0);
    const topK = checkInt('topK', opts.topK ?? 40, 0, V);
    const seed = checkInt('seed', opts.seed ?? 0, 0, 2147483647);
    const where = new Error();
    const out = await h.generate(p, maxNewTokens, temperature, topK, seed).catch((e: unknown) => rethrow(e, where));
    return Array.from(out);
  }

  /**
   * Zero-copy view of the flat fp32 parameters (layout: src/train/param-layout.ts). On device 'cuda' the
   * buffers live on the GPU: each call downloads into a host copy and returns a view of it (a snapshot that
   * the next call of the same accessor refreshes in place; write through loadParams, not through the view).
   */
  params(): Float32Array {
    return this.live().view('params');
  }
  /** Zero-copy view of the gradients of the last step/forwardBackward. */
  grads(): Float32Array {
    return this.live().view('grads');
  }
  /** Zero-copy views of the AdamW first and second moments. */
  adamM(): Float32Array {
    return this.live().view('adamM');
  }
  adamV(): Float32Array {
    return this.live().view('adamV');
  }
  /** Number of AdamW steps taken (drives bias correction). */
  get optimizerStep(): number {
    return this.live().adamStep();
  }
  set optimizerStep(t: number) {
    this.live().setAdamStep(checkInt('optimizerStep', t, 0, 2147483647));
  }

  /** Copies parameters in (length numParams, finite values). */
  loadParams(src: Float32Array): void {
    this.loadBuffer('params', src);
  }

  /** Restores optimizer state (moments and step) for an exact resume. */
  loadOptimizerState(m: Float32Array, v: Float32Array, step: number): void {
    this.loadBuffer('adamM', m);
    this.loadBuffer('adamV', v);
    this.optimizerStep = step;
  }

  private loadBuffer(which: 'params' | 'adamM' | 'adamV', src: Float32Array): void {
    const h = this.live();
    if (!types.isFloat32Array(src)) throw new TypeError(invalidParameter(which, 'a Float32Array', src));
    if (src.length !== this.numParams) throw new RangeError(invalidParameter(`${which}.length`, `${this.numParams} (numParams)`, src.length));
    for (let i = 0; i < src.length; i++) {
      if (!Number.isFinite(src[i])) throw new RangeError(`${which}[${i}] = ${src[i]} is not finite`);
    }
    h.loadParams(which, src);
  }

  /** SHA-256 (hex) of the fp32 parameter bytes, little-endian, in layout order. */
  paramsHash(): string {
    return this.live().paramsHash();
  }

  // ---- the outer loop's pseudo-gradient, kept where the parameters are (on the GPU for device 'cuda') ----

  /** Remembers the current parameters as θ_start, what compressDelta() measures Δ from (a device copy on 'cuda'). */
  markRoundStart(): void {
    this.live().markRoundStart();
  }

  /**
   * Δ = θ_start − params (fp32, per element), compressed with error feedback on the engine's own residual:
   * bit-identical to `compressor.compress(pseudoGradient(start, params))` with a Compressor of this block holding
   * the same residual. On device 'cuda' only the codes and scales are copied to the host. A non-finite Δ (or
   * Δ + residual overflowing) rejects with the Compressor's RangeError, naming delta[i], and leaves the residual
   * unchanged; before any markRoundStart() it rejects with an Error saying so.
   */
  async compressDelta(block: number = DEFAULT_QUANT_BLOCK): Promise<Int8Quantized> {
    const h = this.live();
    checkBlock(block);
    const where = new Error();
    try {
      return await h.compressDelta(block);
    } catch (e) {
      return rethrow(sameRealm(e), where);
    }
  }

  /** A copy of the error-feedback residual (numParams floats; zero until the first compressDelta), for worker state. */
  residual(): Float32Array {
    return this.live().residual();
  }

  /** Copies a residual in (length numParams, finite values; a RangeError names a bad index and changes nothing). */
  loadResidual(residual: Float32Array): void {
    const h = this.live();
    checkF32('residual', residual);
    if (residual.length !== this.numParams) throw new RangeError(invalidParameter('residual.length', `${this.numParams} (numParams)`, residual.length));
    try {
      h.loadResidual(residual);
    } catch (e) {
      throw sameRealm(e);
    }
  }

  /** Sets the residual to zero. */
  resetResidual(): void {
    this.live().resetResidual();
  }

  /**
   * Puts back the residual from before the last compressDelta (a round that did not commit: its Δ is not
   * consumed and goes into the next round's). Returns false, changing nothing, when there is nothing to undo
   * (no compressDelta since the last undo, loadResidual or resetResidual).
   */
  undoCompressDelta(): boolean {
    return this.live().undoCompressDelta();
  }

  /** Releases native memory (views already handed out stay valid). Further calls throw. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }
}

function rethrow(e: unknown, where: Error): never {
  const err = e instanceof Error ? e : new Error(String(e));
  if (where.stack) err.stack = `${err.name}: ${err.message}\n${where.stack.split('\n').slice(1).join('\n')}`;
  throw err;
}

// ---- int8 compression ----
// Blockwise absmax int8 quantization with one fp32 scale per block, and the error-feedback compressor
// (native/quant; the exact conventions are in native/include/covenant/quant.h):
//   scale = absmax / 127 (0 for an all-zero block), code = round-half-even(x / scale) in [-127, 127],
//   dequant = code * scale, so |x - dequant| <= scale * (1/2 + 2^-16) per element.
// Work on tensors runs on native threads (promises); the typed arrays handed to a pending call are used in
// place (zero-copy), so do not modify them until it settles. Non-finite input is refused with a RangeError
// naming the index, on the native thread (no scan of large arrays on the event loop).
// These imports sit here, not at the top, to keep this section self-contained; imports are hoisted.
import { createHash } from 'node:crypto';
import { CheckpointCorruptError, CovenantError } from './errors';
import { readSafetensors, writeSafetensors } from './train/safetensors';

/**
 * Elements per fp32 scale when a call names none, chosen by measurement (`npm run bench -- quant`; README
 * "int8 compression"). Smaller blocks cost scale bytes (4/block per element: 12.5% at 32, 3.1% at 128, 0.4%
 * at 1024); larger ones cost accuracy, since a block's absmax sets its step. Relative RMS error of one round
 * trip, blocks 32/64/128/256/1024: Gaussian 5.35/5.94/6.47/6.96/7.87e-3; Student-t(3) 8.48/10.8/13.8/17.4/
 * 27.5e-3; a real pseudo-gradient (small preset, 50 AdamW steps) 3.81/3.95/4.10/4.24/4.49e-3. Counting one bit
 * per element per halving of the error, the best block is 256 (Gaussian), 64 (heavy tails) and 1024 (the
 * pseudo-gradient); 128 is within 0.1 bit per element of the best on all three, the smallest worst case.
 * Speed does not decide it: every size runs near memory speed.
 */
export const DEFAULT_QUANT_BLOCK = 128;

export interface Int8Quantized {
  /** One int8 code per element, in [-127, 127]. */
  codes: Int8Array;
  /** One fp32 scale per block: ceil(codes.length / block). */
  scales: Float32Array;
}

export interface QuantInfo {
  /** The kernels this CPU runs: 'avx512', 'avx2' or 'scalar'. */
  isa: string;
  /** Threads of the addon's quantization pool (used for tensors of poolThresholdElements or more). */
  threads: number;
  poolThresholdElements: number;
}

interface NativeCompressorHandle {
  size(): number;
  block(): number;
  compress(input: Float32Array): Promise<Int8Quantized>;
  residual(): Float32Array;
  loadResidual(r: Float32Array): void;
  reset(): void;
}

interface QuantAddon {
  quantize(x: Float32Array, block: number): Promise<Int8Quantized>;
  dequantize(codes: Int8Array, scales: Float32Array, block: number, out?: Float32Array): Promise<Float32Array>;
  dequantizeAccumulate(acc: Float32Array, codes: Int8Array, scales: Float32Array, block: number): Promise<Float32Array>;
  quantInfo(): QuantInfo;
  NativeCompressor: new (n: number, block: number) => NativeCompressorHandle;
}

function quantAddon(): QuantAddon {
  return load() as unknown as QuantAddon;
}

const MAX_BLOCK = 2147483647;

function checkBlock(block: unknown): number {
  return checkInt('block', block, 1, MAX_BLOCK);
}

function checkF32(name: string, v: unknown): Float32Array {
  if (!types.isFloat32Array(v)) throw new TypeError(invalidParameter(name, 'a Float32Array', v));
  return v;
}

function checkCodesAndScales(codes: unknown, scales: unknown, block: number): [Int8Array, Float32Array] {
  if (!types.isInt8Array(codes)) throw new TypeError(invalidParameter('codes', 'an Int8Array', codes));
  const s = checkF32('scales', scales);
  const nb = quantNumBlocks(codes.length, block);
  if (s.length !== nb) {
    throw new RangeError(`Expected scales to hold ceil(codes.length / block) = ceil(${codes.length} / ${block}) = ${nb} values but it holds ${s.length}`);
  }
  return [codes, s];
}

/**
 * Errors made by the addon belong to the realm it was first loaded in (another one under jest or node:vm),
 * where `instanceof RangeError` is false; rebuilt here, they keep their class for callers in any realm.
 */
function sameRealm(e: unknown): unknown {
  if (e instanceof Error || typeof e !== 'object' || e === null) return e;
  const { name, message } = e as { name?: unknown; message?: unknown };
  if (typeof message !== 'string') return e;
  if (name === 'RangeError') return new RangeError(message);
  if (name === 'TypeError') return new TypeError(message);
  return name === 'Error' ? new Error(message) : e;
}

function sharesMemory(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.buffer !== b.buffer || a.byteLength === 0 || b.byteLength === 0) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** What the quantization kernels run on (ISA, pool threads). */
export function quantInfo(): QuantInfo {
  return quantAddon().quantInfo();
}

/** Number of blocks (= scales) of n elements: ceil(n / block). */
export function quantNumBlocks(n: number, block: number = DEFAULT_QUANT_BLOCK): number {
  checkInt('n', n, 0);
  checkBlock(block);
  return Math.ceil(n / block);
}

/** Bytes of a serialized int8 slice of n elements: n codes, then 4 bytes per block (native quant.h). */
export function quantizedBytes(n: number, block: number = DEFAULT_QUANT_BLOCK): number {
  return n + 4 * quantNumBlocks(n, block);
}

/** Quantizes x to int8 codes with one fp32 scale per block. Rejects (RangeError) on a NaN or Infinity, naming its index. */
export async function quantize(x: Float32Array, block: number = DEFAULT_QUANT_BLOCK): Promise<Int8Quantized> {
  checkF32('x', x);
  checkBlock(block);
  const where = new Error();
  return quantAddon().quantize(x, block).catch((e: unknown) => rethrow(sameRealm(e), where));
}

/** codes * scale of their block, into `out` (length codes.length) or a new array. Refuses negative or non-finite scales. */
export async function dequantize(codes: Int8Array, scales: Float32Array, block: number = DEFAULT_QUANT_BLOCK, out?: Float32Array): Promise<Float32Array> {
  checkBlock(block);
  const [c, s] = checkCodesAndScales(codes, scales, block);
  if (out !== undefined) {
    checkF32('out', out);
    if (out.length !== c.length) throw new RangeError(invalidParameter('out.length', `codes.length (${c.length})`, out.length));
    if (sharesMemory(out, c) || sharesMemory(out, s)) throw new RangeError('out must not share memory with codes or scales');
  }
  const where = new Error();
  return quantAddon().dequantize(c, s, block, out).catch((e: unknown) => rethrow(sameRealm(e), where));
}

/**
 * acc += codes * scale of their block (the product rounded first, so the result is bit-identical to
 * dequantize then add). Resolves with acc. Refuses negative or non-finite scales, leaving acc untouched.
 */
export async function dequantizeAccumulate(acc: Float32Array, codes: Int8Array, scales: Float32Array, block: number = DEFAULT_QUANT_BLOCK): Promise<Float32Array> {
  checkF32('acc', acc);
  checkBlock(block);
  const [c, s] = checkCodesAndScales(codes, scales, block);
  if (acc.length !== c.length) throw new RangeError(invalidParameter('acc.length', `codes.length (${c.length})`, acc.length));
  if (sharesMemory(acc, c) || sharesMemory(acc, s)) throw new RangeError('acc must not share memory with codes or scales');
  const where = new Error();
  return quantAddon().dequantizeAccumulate(acc, c, s, block).catch((e: unknown) => rethrow(sameRealm(e), where));
}

/** The `format` in a residual file's metadata, and its layout version. */
export const RESIDUAL_FORMAT = 'covenant-residual';
export const RESIDUAL_VERSION = '1';
const RESIDUAL_TENSOR = 'residual';

/** SHA-256 (hex) of a typed array's bytes, hashed in 16 MiB pieces that yield to the event loop between them. */
async function sha256Hex(a: ArrayBufferView): Promise<string> {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const h = createHash('sha256');
  const piece = 16 << 20;
  for (let off = 0; off < bytes.byteLength; off += piece) {
    h.update(bytes.subarray(off, off + piece));
    if (off + piece < bytes.byteLength) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return h.digest('hex');
}

/**
 * Error feedback for compressed pseudo-gradients: compress(x) quantizes x + residual and keeps
 * residual = (x + residual) - dequant, what quantization dropped, for the next call. Over R calls the
 * dequantized outputs sum to the sum of the inputs minus the last residual, whose elements stay within half
 * a scale. The residual is worker state: save() it and load it back after a restart.
 */
export class Compressor {
  readonly n: number;
  readonly block: number;
  private readonly handle: NativeCompressorHandle;
  /** What is in flight ('compress', 'save', 'load'); other calls are refused meanwhile. */
  private busy: string | undefined;

  constructor(n: number, block: number = DEFAULT_QUANT_BLOCK) {
    this.n = checkInt('n', n, 0);
    this.block = checkBlock(block);
    try {
      this.handle = new (quantAddon().NativeCompressor)(n, block);
    } catch (e) {
      throw sameRealm(e);
    }
  }

  private idle(what: string): void {
    if (this.busy) throw new Error(`Compressor is busy with ${this.busy}(): await it before ${what}`);
  }

  /** Quantizes input + residual and updates the residual. A NaN/Infinity (or an overflowing sum) rejects with a RangeError naming the index and leaves the residual unchanged. */
  async compress(input: Float32Array): Promise<Int8Quantized> {
    this.idle('compress()');
    checkF32('input', input);
    if (input.length !== this.n) throw new RangeError(invalidParameter('input.length', `n (${this.n})`, input.length));
    const where = new Error();
    this.busy = 'compress';
    try {
      return await this.handle.compress(input);
    } catch (e) {
      return rethrow(sameRealm(e), where);
    } finally {
      this.busy = undefined;
    }
  }

  /** Zero-copy view of the residual (n floats). It changes under a pending compress(). */
  residual(): Float32Array {
    return this.handle.residual();
  }

  /** Copies a residual in (length n, finite values; a RangeError names a bad index and leaves the residual unchanged). */
  loadResidual(residual: Float32Array): void {
    this.idle('loadResidual()');
    checkF32('residual', residual);
    if (residual.length !== this.n) throw new RangeError(invalidParameter('residual.length', `n (${this.n})`, residual.length));
    try {
      this.handle.loadResidual(residual);
    } catch (e) {
      throw sameRealm(e);
    }
  }

  /** Sets the residual to zero. */
  reset(): void {
    this.idle('reset()');
    this.handle.reset();
  }

  /**
   * Writes the residual atomically (temp file, fsync, rename) as safetensors: one F32 tensor `residual` of
   * shape [n], metadata {format: 'covenant-residual', version, n, block, residual_sha256}.
   */
  async save(file: string): Promise<void> {
    if (typeof file !== 'string' || file === '') throw new TypeError(invalidParameter('file', 'a file path', file));
    this.idle('save()');
    this.busy = 'save';
    try {
      const r = this.residual();
      const metadata = { format: RESIDUAL_FORMAT, version: RESIDUAL_VERSION, n: String(this.n), block: String(this.block), residual_sha256: await sha256Hex(r) };
      await writeSafetensors(file, [{ name: RESIDUAL_TENSOR, dtype: 'F32', shape: [this.n], data: r }], metadata);
    } finally {
      this.busy = undefined;
    }
  }

  /** A compressor with the n, block and residual of a file written by save(). */
  static async load(file: string): Promise<Compressor> {
    const { n, block, residual } = await readResidualFile(file);
    const c = new Compressor(n, block);
    c.loadChecked(file, residual);
    return c;
  }

  /**
   * Restores the residual from a file written by save(). The file must have this compressor's n and block
   * (else a CovenantError with code RESIDUAL_MISMATCH); a damaged file is a CheckpointCorruptError
   * (CHECKPOINT_CORRUPT). Either way the residual is left unchanged.
   */
  async loadFrom(file: string): Promise<void> {
    this.idle('loadFrom()');
    this.busy = 'load';
    try {
      const { n, block, residual } = await readResidualFile(file);
      if (n !== this.n || block !== this.block) {
        throw new CovenantError('RESIDUAL_MISMATCH',
          `Residual file ${file} holds n = ${n}, block = ${block} but this compressor has n = ${this.n}, block = ${this.block}. ` +
          'HINT: it belongs to another model or compression setting; reset() to start from a zero residual');
      }
      this.busy = undefined;
      this.loadChecked(file, residual);
    } finally {
      this.busy = undefined;
    }
  }

  private loadChecked(file: string, residual: Float32Array): void {
    try {
      this.loadResidual(residual);
    } catch (e) {
      if (e instanceof RangeError) throw new CheckpointCorruptError(`Residual file ${file} is invalid: ${e.message}`, { cause: e });
      throw e;
    }
  }
}

/** Reads and checks a residual file; every problem is a CheckpointCorruptError naming the file. */
async function readResidualFile(file: string): Promise<{ n: number; block: number; residual: Float32Array }> {
  if (typeof file !== 'string' || file === '') throw new TypeError(invalidParameter('file', 'a file path', file));
  const fail = (what: string) => new CheckpointCorruptError(`Residual file ${file} is invalid: ${what}`);
  const { metadata, tensors } = await readSafetensors(file);
  if (metadata.format !== RESIDUAL_FORMAT) {
    throw fail(`__metadata__.format is ${JSON.stringify(metadata.format)}, not ${JSON.stringify(RESIDUAL_FORMAT)} (not a residual file?)`);
  }
  if (metadata.version !== RESIDUAL_VERSION) throw fail(`__metadata__.version is ${JSON.stringify(metadata.version)} (this build reads ${RESIDUAL_VERSION})`);
  const int = (key: 'n' | 'block', lo: number): number => {
    const s = metadata[key];
    const v = s !== undefined && /^\d{1,16}$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(v) || v < lo || (key === 'block' && v > MAX_BLOCK)) throw fail(`__metadata__.${key} is ${JSON.stringify(s)} (expected an integer >= ${lo})`);
    return v;
  };
  const n = int('n', 0);
  const block = int('block', 1);
  const names = [...tensors.keys()];
  if (names.length !== 1 || names[0] !== RESIDUAL_TENSOR) throw fail(`it holds tensors [${names.join(', ')}] instead of exactly one named ${RESIDUAL_TENSOR}`);
  const t = tensors.get(RESIDUAL_TENSOR)!;
  if (t.dtype !== 'F32' || t.shape.length !== 1 || t.shape[0] !== n) {
    throw fail(`tensor ${RESIDUAL_TENSOR} is ${t.dtype} [${t.shape.join(', ')}], expected F32 [${n}] (__metadata__.n)`);
  }
  const want = metadata.residual_sha256;
  if (!/^[0-9a-f]{64}$/.test(want ?? '')) throw fail('__metadata__.residual_sha256 is missing or not 64 hex digits');
  const got = await sha256Hex(t.data);
  if (got !== want) throw fail(`the residual's SHA-256 is ${got} but __metadata__.residual_sha256 says ${want} (corrupted data)`);
  return { n, block, residual: t.data as Float32Array };
}

// ---- ring all-reduce ----

/** Where a rank listens, as 'host:port' (IPv6 as '[::1]:port'). */
export type PeerString = string;

export interface AllReduceOptions {
  /** This rank's index in peers (ring order). */
  rank: number;
  /** Every rank's 'host:port', in ring order; each rank connects to the next and accepts the previous. */
  peers: PeerString[];
  /** Bind address when it differs from peers[rank] (e.g. '0.0.0.0:7000'). */
  listen?: PeerString;
  /** Averaged in place, bit-identical on every rank. Left untouched on failure. */
  tensor: Float32Array;
  mode?: 'fp32' | 'int8';
  /** int8 mode: elements per absmax scale (default DEFAULT_QUANT_BLOCK). */
  blockSize?: number;
  /** Deadline of every socket operation without progress, and for forming the ring (default 10000). */
  timeoutMs?: number;
  /** Round and attempt: frames and handshakes of any other collective are refused. */
  collectiveId: { round: number; attempt: number };
  /** Per-round secret handed out by the control plane; the handshake proves knowledge of it. */
  secret: string | Uint8Array;
  /** Pipelining granularity in fp32 bytes per slice (default 1 MiB). */
  sliceBytes?: number;
  /** Merkle transcripts of the traffic each way (result.sentSha256 / receivedSha256 / transcript); one SHA-256 pass per byte each way. Default false. */
  transcripts?: boolean;
  /** Aborting the signal cancels the collective (it rejects with code COMM_ABORTED). */
  signal?: AbortSignal;
}

export interface AllReduceResult {
  seconds: number;
  /** Wire bytes, frame headers and the handshake included. */
  bytesSent: number;
  bytesReceived: number;
  /**
   * Transcripts: hex Merkle roots over the traffic sent to the successor and received from the predecessor
   * ('' without transcripts). One leaf per int8 block of a frame, SHA-256(0x00 ‖ u32 step ‖ u32 block ‖ f32
   * scale ‖ codes), or per frame in fp32 mode (u32 step ‖ u32 slice ‖ payload); nodes as src/trust/merkle.ts.
   */
  sentSha256: string;
  receivedSha256: string;
  /** With transcripts (N > 1): the leaves, and in int8 mode what this rank sent, for openings. */
  transcript?: AllReduceTranscript;
}

export interface AllReduceTranscript {
  /** 32-byte leaf hashes in traffic order. */
  sentLeaves: Buffer;
  receivedLeaves: Buffer;
  /** int8: what the reduce-scatter sent, by element position (zero in the chunk this rank owns). */
  scatterCodes?: Int8Array;
  scatterScales?: Float32Array;
  /** int8: the agreed int8 result (what the all-gather sent). */
  finalCodes?: Int8Array;
  finalScales?: Float32Array;
}

export type CommErrorCode = 'COMM_TIMEOUT' | 'COMM_CLOSED' | 'COMM_PROTOCOL' | 'COMM_AUTH' | 'COMM_ABORTED' | 'COMM_IO' | 'COMM_ARGS';

/** A failed collective: the code says why, peerRank names the neighbour at fault (-1: none), phase where. */
export class CommError extends CovenantError {
  constructor(
    code: CommErrorCode,
    message: string,
    readonly peerRank: number,
    readonly phase: string,
  ) {
    super(code, message);
  }
}

export function parsePeer(name: string, s: unknown): { host: string; port: number } {
  if (typeof s !== 'string') throw new TypeError(invalidParameter(name, "'host:port'", s));
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) throw new RangeError(invalidParameter(name, "'host:port' (IPv6 as '[addr]:port')", s));
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(invalidParameter(`${name} port`, 'an integer in [1, 65535]', m[2]));
  return { host: m[1], port };
}

export interface AllReduceHandle {
  promise: Promise<AllReduceResult>;
  /** Cancels the collective; the promise rejects with COMM_ABORTED. Idempotent. */
  abort(): void;
}

/** Starts a ring all-reduce on native threads; see allReduce. */
export function startAllReduce(opts: AllReduceOptions): AllReduceHandle {
  if (typeof opts !== 'object' || opts === null) throw new TypeError(invalidParameter('opts', 'an object', opts));
  const known = ['rank', 'peers', 'listen', 'tensor', 'mode', 'blockSize', 'timeoutMs', 'collectiveId', 'secret', 'sliceBytes', 'transcripts', 'signal'];
  for (const k of Object.keys(opts)) if (!known.includes(k)) throw new TypeError(`Unknown option ${k} (known: ${known.join(', ')})`);
  if (!Array.isArray(opts.peers) || opts.peers.length === 0) throw new TypeError(invalidParameter('peers', "a non-empty array of 'host:port'", opts.peers));
  const peers = opts.peers.map((p, i) => parsePeer(`peers[${i}]`, p));
  const rank = checkInt('rank', opts.rank, 0, peers.length - 1);
  if (!types.isFloat32Array(opts.tensor)) throw new TypeError(invalidParameter('tensor', 'a Float32Array', opts.tensor));
  const mode = opts.mode ?? 'fp32';
  if (mode !== 'fp32' && mode !== 'int8') throw new RangeError(invalidParameter('mode', "'fp32' or 'int8'", mode));
  const blockSize = checkInt('blockSize', opts.blockSize ?? DEFAULT_QUANT_BLOCK, 1, 1 << 24);
  const timeoutMs = checkInt('timeoutMs', opts.timeoutMs ?? 10000, 1, 86_400_000);
  const sliceBytes = checkInt('sliceBytes', opts.sliceBytes ?? 1024 * 1024, 64, 64 << 20);
  if (opts.transcripts !== undefined && typeof opts.transcripts !== 'boolean') throw new TypeError(invalidParameter('transcripts', 'a boolean', opts.transcripts));
  const transcripts = opts.transcripts ?? false;
  const id = opts.collectiveId;
  if (typeof id !== 'object' || id === null) throw new TypeError(invalidParameter('collectiveId', '{ round, attempt }', id));
  const round = checkInt('collectiveId.round', id.round, 0);
  const attempt = checkInt('collectiveId.attempt', id.attempt, 0, 0xffffffff);
  let secret: string | Buffer;
  if (typeof opts.secret === 'string') secret = opts.secret;
  else if (types.isUint8Array(opts.secret)) secret = Buffer.from(opts.secret);
  else throw new TypeError(invalidParameter('secret', 'a string or Uint8Array', opts.secret));
  if (peers.length > 1 && secret.length === 0) throw new RangeError('secret must not be empty');
  // Non-finite values are refused on the native thread (COMM_ARGS, naming the index), not scanned here.
  const t = opts.tensor;
  const listen = opts.listen === undefined ? undefined : parsePeer('listen', opts.listen);
  const where = new Error();
  const handle = load().allReduceStart(t, { rank, peers, listen, mode, blockSize, timeoutMs, round, attempt, secret, sliceBytes, transcripts });
  const signal = opts.signal;
  const onAbort = () => handle.abort();
  if (signal) {
    if (signal.aborted) handle.abort();
    else signal.addEventListener('abort', onAbort, { once: true });
  }
  const promise = handle.promise.then(
    (r) => {
      signal?.removeEventListener('abort', onAbort);
      return r;
    },
    (e: unknown) => {
      signal?.removeEventListener('abort', onAbort);
      const n = e as { message?: string; code?: CommErrorCode; peerRank?: number; phase?: string };
      const err = new CommError(n.code ?? 'COMM_IO', n.message ?? String(e), n.peerRank ?? -1, n.phase ?? '');
      if (where.stack) err.stack = `${err.name}: ${err.message}\n${where.stack.split('\n').slice(1).join('\n')}`;
      throw err;
    },
  );
  return { promise, abort: () => handle.abort() };
}

/**
 * Averages `tensor` over all ranks with the native ring all-reduce over TCP, in place and bit-identical on
 * every rank. Rejects with a CommError naming the peer and the phase when a peer dies, stalls past
 * timeoutMs, fails the handshake or sends a bad frame; the tensor is then left untouched.
 */
export function allReduce(opts: AllReduceOptions): Promise<AllReduceResult> {
  return startAllReduce(opts).promise;
}

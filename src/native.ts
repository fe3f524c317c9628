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
  step(tokens: Int32Array, B: number, T: number, opt: OptimizerSettings): Promise<StepResult>;
  forwardBackward(tokens: Int32Array, B: number, T: number): Promise<{ loss: number }>;
  evalLoss(tokens: Int32Array, B: number, T: number): Promise<number>;
  logits(tokens: Int32Array, B: number, T: number): Promise<Float32Array>;
  generate(prompt: Int32Array, maxNew: number, temperature: number, topK: number, seed: number): Promise<Int32Array>;
  dispose(): void;
}

export interface BuildInfo {
  blas: boolean;
  blasInfo: string;
  gemmDefault: 'blas' | 'packed';
  packedIsa: string;
  hardwareThreads: number;
  cuda: boolean;
}

interface Addon {
  NativeEngine: new (model: ModelConfig, threads: number, seed: number, attention: string, gemm: string) => NativeEngineHandle;
  buildInfo(): BuildInfo;
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

export interface EngineOptions {
  model: ModelConfig;
  device?: 'cpu';
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
  readonly device = 'cpu' as const;
  readonly numParams: number;
  readonly threads: number;
  readonly attention: Attention;
  private handle: NativeEngineHandle | undefined;

  private constructor(model: ModelConfig, handle: NativeEngineHandle, attention: Attention) {
    this.model = model;
    this.handle = handle;
    this.numParams = handle.numParams();
    this.threads = handle.threads();
    this.attention = attention;
  }

  static create(opts: EngineOptions): Engine {
    if (typeof opts !== 'object' || opts === null) throw new TypeError(invalidParameter('opts', 'an object', opts));
    const model = parseModelConfig(opts.model, 'model');
    const device = opts.device ?? 'cpu';
    if (device !== 'cpu') {
      throw new RangeError(invalidParameter('device', "'cpu' (this build has no CUDA backend)", device));
    }
    const threads = opts.threads === undefined ? 0 : checkInt('threads', opts.threads, 1, 1024);
    const seed = opts.seed === undefined ? 0 : checkInt('seed', opts.seed, 0, 2147483647);
    const attention = opts.attention ?? 'flash';
    if (attention !== 'flash' && attention !== 'naive') throw new RangeError(invalidParameter('attention', "'flash' or 'naive'", attention));
    const gemm = opts.gemm ?? 'auto';
    if (!['auto', 'blas', 'packed', 'ref'].includes(gemm)) throw new RangeError(invalidParameter('gemm', "'auto', 'blas', 'packed' or 'ref'", gemm));
    const A = load();
    return new Engine(model, new A.NativeEngine(model, threads, seed, attention, gemm), attention);
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

  /** Zero-copy view of the flat fp32 parameters (layout: src/train/param-layout.ts). */
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

// Benchmarks: `npm run bench -- [gemm|attention|train|all ...] [--threads N] [--quick]`.
// Each NAME writes bench/out/NAME.json = { machine, rows } (DESIGN.md, "Tests and benches") and prints a
// table. GEMM and attention run in the native bench executable (native/bench/main.cpp; it checks every
// kernel against its reference before timing); train runs the Node engine, beside the PyTorch peer
// (bench/peers/torch_gpt2_step.py) when /usr/bin/python3 has torch. Every bench measures its limit (the
// fp32 FMA peak at the same thread count) and puts it in its rows as impl 'limit'.
//
// The native executable is build/bin/covenant_native_bench (built by `npm ci` / `npm run build:native`);
// COVENANT_BENCH_BIN overrides the path.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { buildInfo, Engine } from '../src/native';
import { invalidParameter, presetConfig, PresetName } from '../src/train/model-config';

const ROOT = path.resolve(__dirname, '..', '..');
const OUT_DIR = path.join(ROOT, 'bench', 'out');
const PYTHON = '/usr/bin/python3';
const TORCH_PEER = path.join(ROOT, 'bench', 'peers', 'torch_gpt2_step.py');
const OPENBLAS_VARS = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;
const BENCHES = ['gemm', 'attention', 'train'] as const;
type BenchName = (typeof BENCHES)[number];

type Row = Record<string, unknown>;

interface Options {
  names: BenchName[];
  /** undefined: each bench's default (all hardware threads for gemm/attention, 2 for train). */
  threads?: number;
  quick: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Arguments

function parseOptions(argv: string[]): Options {
  const names: BenchName[] = [];
  let threads: number | undefined;
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') {
      quick = true;
    } else if (a === '--threads') {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < 1 || n > 1024) {
        throw new RangeError(invalidParameter('--threads', 'an integer in [1, 1024]', v));
      }
      threads = n;
    } else if (a === 'all') {
      names.push(...BENCHES);
    } else if ((BENCHES as readonly string[]).includes(a)) {
      names.push(a as BenchName);
    } else {
      throw new RangeError(
        `${invalidParameter('argument', `one of ${BENCHES.join(', ')}, all, --threads N, --quick`, a)}. ` +
          'Usage: npm run bench -- [gemm|attention|train|all ...] [--threads N] [--quick]',
      );
    }
  }
  return { names: names.length ? [...new Set(names)] : [...BENCHES], threads, quick };
}

// ---------------------------------------------------------------------------------------------------------
// The native bench executable

function nativeBin(): string {
  const bin = process.env.COVENANT_BENCH_BIN ?? path.join(ROOT, 'build', 'bin', 'covenant_native_bench');
  if (!fs.existsSync(bin)) {
    throw new Error(
      `the native bench executable ${bin} does not exist. HINT: run \`npm run build:native\` (or \`npm ci\`), ` +
        'or point COVENANT_BENCH_BIN at a covenant_native_bench you built with cmake',
    );
  }
  return bin;
}

/** Runs the native bench; its stderr (progress, errors) passes through; returns its JSON rows. */
function runNative(args: string[], env: NodeJS.ProcessEnv = process.env): Row[] {
  const bin = nativeBin();
  const r = spawnSync(bin, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${bin}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${bin} ${args.join(' ')} failed (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`}); see its message above`);
  }
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Row);
}

interface NativeInfo {
  have_blas: boolean;
  blas_info: string;
  blas_core: string;
  packed_isa: string;
  gemm_default: string;
}

function measurePeak(threads: number, quick: boolean): Row {
  process.stderr.write(`measuring the fp32 FMA peak on ${threads} thread(s)...\n`);
  const [row] = runNative(['peak', '--threads', String(threads), '--min-seconds', quick ? '0.1' : '0.3']);
  return row;
}

// ---------------------------------------------------------------------------------------------------------
// Machine record

function openblasEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of OPENBLAS_VARS) out[k] = env[k] ?? 'unset';
  return out;
}

function physicalCores(): number | undefined {
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const seen = new Set<string>();
    for (const block of text.split(/\n\s*\n/)) {
      const phys = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (phys !== undefined && core !== undefined) seen.add(`${phys}:${core}`);
    }
    return seen.size || undefined;
  } catch {
    return undefined;
  }
}

function machine(extra: Row): Row {
  const [info] = runNative(['info']);
  const cpus = os.cpus();
  return {
    cpu_model: cpus[0]?.model ?? 'unknown',
    cores: physicalCores() ?? cpus.length,
    hardware_threads: os.availableParallelism(),
    memory_bytes: os.totalmem(),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node_version: process.version,
    blas_info: info.blas_info,
    blas_core: info.blas_core,
    packed_isa: info.packed_isa,
    gemm_default: info.gemm_default,
    openblas_env: openblasEnv(),
    loadavg_start: os.loadavg().map((x) => Number(x.toFixed(2))),
    date: new Date().toISOString(),
    ...extra,
  };
}

/** Fraction of all CPUs busy over `ms` while this process sleeps: what other processes are using. */
function otherCpuBusy(ms = 1000): number | undefined {
  const sample = (): [number, number] | undefined => {
    try {
      const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
      const idle = f[3] + (f[4] ?? 0);  // idle + iowait
      return [f.reduce((a, b) => a + b, 0), idle];
    } catch {
      return undefined;
    }
  };
  const a = sample();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = sample();
  if (!a || !b || b[0] === a[0]) return undefined;
  return Number((1 - (b[1] - a[1]) / (b[0] - a[0])).toFixed(3));
}

/** Samples other processes' CPU use once more after the measurements, and says so when they were using the
 * CPU: every figure here is a throughput, and shares it. */
function loadNote(mach: Row): void {
  mach.other_cpu_busy_end = otherCpuBusy();
  const busy = [mach.other_cpu_busy_start, mach.other_cpu_busy_end].filter((x): x is number => typeof x === 'number');
  if (busy.some((x) => x > 0.1)) {
    console.log(`note: other processes kept ${busy.map((x) => `${Math.round(100 * x)}%`).join(' (start) and ')} (end) of the CPU busy ` +
      'around this bench, so the figures are low and noisy. Rerun on an idle machine to compare.');
  }
}

function writeResult(name: BenchName, mach: Row, rows: Row[]): void {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.json`);
  const record = { machine: { ...mach, loadavg_end: os.loadavg().map((x) => Number(x.toFixed(2))) }, rows };
  fs.writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`\nwrote ${path.relative(process.cwd(), file) || file}`);
}

// ---------------------------------------------------------------------------------------------------------
// Tables

function fmt(x: unknown, digits = 1): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '-';
  return x.toFixed(digits);
}

function printTable(title: string, header: string[], body: string[][]): void {
  console.log(`\n${title}`);
  const width = header.map((h, c) => Math.max(h.length, ...body.map((r) => r[c].length)));
  const numeric = header.map((_, c) => body.every((r) => /^[-+]?[\d.]+[×%]?$|^-$/.test(r[c])));
  const line = (cells: string[]) =>
    cells.map((s, c) => (numeric[c] ? s.padStart(width[c]) : s.padEnd(width[c]))).join('  ').trimEnd();
  console.log(line(header));
  console.log(width.map((w) => '-'.repeat(w)).join('  '));
  for (const r of body) console.log(line(r));
}

const num = (r: Row | undefined, k: string): number => (r && typeof r[k] === 'number' ? (r[k] as number) : NaN);

// ---------------------------------------------------------------------------------------------------------
// gemm

function envLabel(env: NodeJS.ProcessEnv): string {
  const set = OPENBLAS_VARS.filter((k) => env[k] !== undefined);
  return set.length === 0 ? 'unset' : OPENBLAS_VARS.map((k) => `${k}=${env[k] ?? 'unset'}`).join(' ');
}

function benchGemm(opts: Options): void {
  const threads = opts.threads ?? os.availableParallelism();
  const busy = otherCpuBusy();
  const peak = measurePeak(threads, opts.quick);
  const mach = machine({ threads, peak_gflops: peak.gflops, other_cpu_busy_start: busy });
  const common = ['gemm', '--threads', String(threads), '--sizes', opts.quick ? '256,512' : '256,512,1024,2048',
    '--min-seconds', opts.quick ? '0.05' : '0.3', ...(opts.quick ? ['--no-shapes'] : [])];

  // OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads, so the environment is varied per child
  // process: once as set, and, when either is set, once more with both removed (BLAS rows only).
  const envSet = OPENBLAS_VARS.some((k) => process.env[k] !== undefined);
  process.stderr.write(`gemm: ${threads} thread(s), OpenBLAS environment ${envLabel(process.env)}...\n`);
  const rows: Row[] = [peak, ...runNative(common)];
  if (envSet) {
    const unset = { ...process.env };
    for (const k of OPENBLAS_VARS) delete unset[k];
    process.stderr.write('gemm: again with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (BLAS rows only)...\n');
    rows.push(...runNative([...common, '--blas-only'], unset));
  }

  const peakG = num(peak, 'gflops');
  console.log(`\nGEMM, fp32 row-major, ${threads} thread(s); limit: fp32 FMA peak ${fmt(peakG)} GFLOP/s (${peak.isa}, best of 5)`);
  console.log(envSet
    ? `OpenBLAS environment as set: ${envLabel(process.env)}; BLAS rows were run as set and with both unset.`
    : `OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are both unset: the BLAS rows ran once, with OpenBLAS's own CPU detection (core ${mach.blas_core}).`);
  const g = rows.filter((r) => r.case !== 'fp32_peak');
  loadNote(mach);
  printTable('GEMM rows (seconds = median rep)', ['case', 'M×N×K', 'op', 'impl', 'backend', 'openblas_env', 'core', 'ms', 'GFLOP/s', '% peak'],
    g.map((r) => [String(r.case), `${r.M}×${r.N}×${r.K}`, String(r.trans), String(r.impl), String(r.backend),
      String(r.openblas_env), String(r.blas_core ?? r.isa ?? ''), fmt(num(r, 'seconds') * 1e3, 2), fmt(num(r, 'gflops')),
      `${fmt((100 * num(r, 'gflops')) / peakG)}%`]));

  // Ratios per shape. "openblas" is BLAS on its own threads; with two environments, the best of them.
  const shapes = [...new Map(g.map((r) => [`${r.case} ${r.M}x${r.N}x${r.K}`, r])).values()];
  const pick = (s: Row, backend: string, env?: string) =>
    g.filter((r) => r.case === s.case && r.M === s.M && r.N === s.N && r.K === s.K && r.backend === backend &&
      (env === undefined || r.openblas_env === env));
  const best = (rs: Row[]) => {
    const g = rs.map((r) => num(r, 'gflops')).filter(Number.isFinite);
    return g.length ? Math.max(...g) : NaN;
  };
  const setLabel = envLabel(process.env);
  const ratioRows = shapes.map((s) => {
    const packed = best(pick(s, 'packed'));
    const inPool = best(pick(s, 'blas-in-pool', setLabel));
    const ob = best(pick(s, 'openblas-threads', setLabel));
    const obUnset = envSet ? best(pick(s, 'openblas-threads', 'unset')) : NaN;
    const obBest = best(pick(s, 'openblas-threads'));
    const cells = [String(s.case), `${s.M}×${s.N}×${s.K}`, fmt(packed), fmt(inPool), fmt(ob)];
    if (envSet) cells.push(fmt(obUnset), `${fmt(obUnset / ob, 2)}×`);
    cells.push(`${fmt(packed / obBest, 2)}×`, `${fmt(inPool / ob, 2)}×`);
    return cells;
  });
  const ratioHeader = ['case', 'M×N×K', 'packed', 'blas-in-pool', 'openblas'];
  if (envSet) ratioHeader.push('openblas(unset)', 'unset/as-set');
  ratioHeader.push('packed/openblas', 'in-pool/openblas');
  printTable(`GFLOP/s by implementation (openblas = its own ${threads} threads${envSet ? ', env as set' : ''}; packed/openblas against the best OpenBLAS figure)`,
    ratioHeader, ratioRows);

  const at1024 = g.filter((r) => r.case === 'square' && r.M === 1024);
  if (at1024.length === 0) {
    console.log('\nfallback ≥ 0.5× OpenBLAS at 1024³: not measured (1024 not among the sizes; run without --quick)');
  } else if (!mach.blas_info || mach.blas_info === 'none') {
    console.log('\nfallback ≥ 0.5× OpenBLAS at 1024³: no BLAS in this build, nothing to compare against');
  } else {
    const ratio = best(at1024.filter((r) => r.backend === 'packed')) / best(at1024.filter((r) => r.backend === 'openblas-threads'));
    console.log(`\nfallback ≥ 0.5× OpenBLAS at 1024³: ${fmt(ratio, 2)}× (${ratio >= 0.5 ? 'met' : 'not met'})`);
  }
  writeResult('gemm', mach, rows);
}

// ---------------------------------------------------------------------------------------------------------
// attention

function benchAttention(opts: Options): void {
  const threads = opts.threads ?? os.availableParallelism();
  const busy = otherCpuBusy();
  const peak = measurePeak(threads, opts.quick);
  const mach = machine({ threads, peak_gflops: peak.gflops, other_cpu_busy_start: busy });
  process.stderr.write(`attention: flash vs naive, ${threads} thread(s)...\n`);
  const rows = [peak, ...runNative(['attention', '--threads', String(threads), '--T', opts.quick ? '64,256' : '64,256,1024',
    '--min-seconds', opts.quick ? '0.05' : '0.3'])];
  const a = rows.filter((r) => r.impl === 'covenant');
  loadNote(mach);
  const peakG = num(peak, 'gflops');
  console.log(`\nCausal attention, B=${a[0]?.B} C=${a[0]?.C} NH=${a[0]?.NH}, ${threads} thread(s); limit: fp32 FMA peak ${fmt(peakG)} GFLOP/s`);
  console.log('FLOPs: forward 4·B·NH·T²·hs/2 (causal half of QKᵀ and PV); backward 2.5× forward, so fwd+bwd = 3.5× forward.');
  printTable('Attention rows (seconds = median rep; scratch = working memory beyond inputs and outputs)',
    ['T', 'variant', 'pass', 'ms', 'GFLOP/s', '% peak', 'scratch MiB'],
    a.map((r) => [String(r.T), String(r.variant), String(r.pass), fmt(num(r, 'seconds') * 1e3, 2), fmt(num(r, 'gflops'), 2),
      `${fmt((100 * num(r, 'gflops')) / peakG)}%`, fmt(num(r, 'scratch_bytes') / 2 ** 20, 2)]));
  const Ts = [...new Set(a.map((r) => r.T as number))];
  const sp = (T: number, pass: string) => {
    const f = a.find((r) => r.T === T && r.pass === pass && r.variant === 'flash');
    const n = a.find((r) => r.T === T && r.pass === pass && r.variant === 'naive');
    return [num(n, 'seconds') / num(f, 'seconds'), num(n, 'scratch_bytes') / num(f, 'scratch_bytes')];
  };
  printTable('flash against naive (speed-up = naive time / flash time)', ['T', 'fwd speed-up', 'fwd+bwd speed-up', 'scratch naive/flash'],
    Ts.map((T) => [String(T), `${fmt(sp(T, 'fwd')[0], 2)}×`, `${fmt(sp(T, 'fwd+bwd')[0], 2)}×`, `${fmt(sp(T, 'fwd+bwd')[1], 0)}×`]));
  writeResult('attention', mach, rows);
}

// ---------------------------------------------------------------------------------------------------------
// train

interface TrainCase {
  preset: PresetName;
  B: number;
  T: number;
  warmup: number;
  steps: number;
  torch: boolean;
}

/** xorshift32 tokens in [0, V): the bench needs no particular text, only valid ids. */
function randomTokens(n: number, V: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s % V;
  }
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// The optimizer settings of both sides (the torch peer's defaults: weight decay 0.1, clip 1.0).
const STEP_OPTS = { lr: 1e-4, weightDecay: 0.1, gradClip: 1.0 };

async function timeCovenant(c: TrainCase, threads: number): Promise<{ params: number; seconds: number; seconds_min: number; loss: number }> {
  const model = presetConfig(c.preset);
  const engine = Engine.create({ model, threads, seed: 1 });
  try {
    const batches = [0, 1, 2, 3].map((i) => randomTokens(c.B * (c.T + 1), model.vocabSize, 1234 + i));
    const times: number[] = [];
    let loss = NaN;
    for (let i = 0; i < c.warmup + c.steps; i++) {
      const t0 = performance.now();
      loss = (await engine.step(batches[i % batches.length], c.B, c.T, STEP_OPTS)).loss;
      const dt = (performance.now() - t0) / 1e3;
      if (i >= c.warmup) times.push(dt);
    }
    return { params: engine.numParams, seconds: median(times), seconds_min: Math.min(...times), loss };
  } finally {
    engine.dispose();
  }
}

function torchAvailable(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function timeTorch(c: TrainCase, threads: number): Row {
  const args = [TORCH_PEER, '--preset', c.preset, '--vocab', String(presetConfig(c.preset).vocabSize), '--B', String(c.B),
    '--T', String(c.T), '--threads', String(threads), '--steps', String(c.steps), '--warmup', String(c.warmup),
    '--lr', String(STEP_OPTS.lr), '--weight-decay', String(STEP_OPTS.weightDecay), '--grad-clip', String(STEP_OPTS.gradClip)];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`${PYTHON} ${args.join(' ')} failed (exit ${r.status}); see its message above`);
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error(`the torch peer printed no JSON line: ${r.stdout.slice(0, 400)}`);
  return JSON.parse(line) as Row;
}

async function benchTrain(opts: Options): Promise<void> {
  const threads = opts.threads ?? 2;
  const busy = otherCpuBusy();
  const peak = measurePeak(threads, opts.quick);
  // The GEMM rate the model FLOPs are held against: the best 1024³ figure of any implementation.
  process.stderr.write(`train: measuring 1024³ GEMM on ${threads} thread(s) as the MFU reference...\n`);
  const gemmRows = runNative(['gemm', '--threads', String(threads), '--sizes', '1024', '--no-shapes', '--min-seconds', opts.quick ? '0.1' : '0.3']);
  const bestGemm = gemmRows.reduce((b, r) => (num(r, 'gflops') > num(b, 'gflops') ? r : b), gemmRows[0]);
  const openblasGemm = gemmRows.find((r) => r.backend === 'openblas-threads');
  const peakG = num(peak, 'gflops');
  const gemmG = num(bestGemm, 'gflops');
  const openblasG = openblasGemm ? num(openblasGemm, 'gflops') : gemmG;
  const torchVersion = torchAvailable();
  const engineBuild = buildInfo();
  const mach = machine({
    threads, peak_gflops: peakG, gemm_1024_best_gflops: gemmG, gemm_1024_best_impl: `${bestGemm.impl}/${bestGemm.backend}`,
    gemm_1024_openblas_gflops: openblasG, engine_build: engineBuild, torch_version: torchVersion ?? 'unavailable',
    step_options: STEP_OPTS, other_cpu_busy_start: busy,
  });
  if (!torchVersion) console.log(`note: ${PYTHON} cannot import torch; the PyTorch peer rows are skipped`);

  // On two cores a gpt2 step takes about 2.5 s at T=64 and 10 s at T=256 (either side), so gpt2 gets 1
  // warm-up step and 5 or 3 timed ones; the whole bench, peer included, then takes 4-6 minutes.
  const cases: TrainCase[] = opts.quick
    ? [
        { preset: 'tiny', B: 4, T: 64, warmup: 1, steps: 3, torch: true },
        { preset: 'small', B: 4, T: 64, warmup: 1, steps: 2, torch: true },
      ]
    : [
        { preset: 'tiny', B: 4, T: 64, warmup: 3, steps: 20, torch: true },
        { preset: 'small', B: 4, T: 64, warmup: 2, steps: 8, torch: true },
        { preset: 'small', B: 4, T: 256, warmup: 2, steps: 5, torch: true },
        { preset: 'gpt2', B: 4, T: 64, warmup: 1, steps: 5, torch: true },
        { preset: 'gpt2', B: 4, T: 256, warmup: 1, steps: 3, torch: true },
      ];
  // The GEMM figures enter the rows as limits (the MFU denominators), not as GEMM measurements of an impl.
  const rows: Row[] = [peak, ...gemmRows.map((r) => ({ impl: 'limit', case: 'gemm_1024', gemm_impl: r.impl, backend: r.backend,
    M: r.M, N: r.N, K: r.K, threads: r.threads, seconds: r.seconds, gflops: r.gflops, openblas_env: r.openblas_env }))];
  const mfu = (params: number, tps: number) => ({
    mfu: (6 * params * tps) / (gemmG * 1e9),
    mfu_vs_gemm: (6 * params * tps) / (openblasG * 1e9),
    mfu_vs_peak: (6 * params * tps) / (peakG * 1e9),
  });
  for (const c of cases) {
    if (c.T > presetConfig(c.preset).maxSeqLen) continue;
    process.stderr.write(`train: ${c.preset} B=${c.B} T=${c.T} covenant (${c.warmup} warm-up + ${c.steps} timed steps)...\n`);
    const cov = await timeCovenant(c, threads);
    const tps = (c.B * c.T) / cov.seconds;
    rows.push({ impl: 'covenant', preset: c.preset, params: cov.params, B: c.B, T: c.T, threads, steps: c.steps, warmup: c.warmup,
      seconds: cov.seconds, seconds_min: cov.seconds_min, tokens_per_s: tps, ...mfu(cov.params, tps), loss: cov.loss });
    if (torchVersion && c.torch) {
      process.stderr.write(`train: ${c.preset} B=${c.B} T=${c.T} torch...\n`);
      const t = timeTorch(c, threads);
      const tt = num(t, 'tokens_per_s');
      if (t.params !== cov.params) console.log(`note: torch counts ${t.params} parameters for ${c.preset}, the engine ${cov.params}`);
      rows.push({ impl: 'torch', torch_version: t.torch_version, preset: c.preset, params: t.params, B: c.B, T: c.T, threads,
        steps: c.steps, warmup: c.warmup, seconds: t.seconds_per_step, seconds_min: t.seconds_min, tokens_per_s: tt,
        ...mfu(num(t, 'params'), tt), loss: t.final_loss });
    }
  }

  const tr = rows.filter((r) => r.preset !== undefined);
  loadNote(mach);
  console.log(`\nTraining step (forward, backward, clip, AdamW), fp32, ${threads} thread(s)`);
  console.log(`limits: fp32 FMA peak ${fmt(peakG)} GFLOP/s; best 1024³ GEMM ${fmt(gemmG)} GFLOP/s (${bestGemm.impl}/${bestGemm.backend}); OpenBLAS 1024³ ${fmt(openblasG)} GFLOP/s`);
  console.log('MFU = 6·params·tokens/s over the best measured 1024³ GEMM rate; "vs peak" over the fp32 FMA peak.');
  printTable('Training rows (seconds = median step)', ['preset', 'params', 'B', 'T', 'impl', 'steps', 's/step', 'tokens/s', 'MFU', 'MFU vs peak'],
    tr.map((r) => [String(r.preset), `${fmt(num(r, 'params') / 1e6, 2)}M`, String(r.B), String(r.T), String(r.impl),
      `${r.warmup}+${r.steps}`, fmt(num(r, 'seconds'), 3), fmt(num(r, 'tokens_per_s'), 0), `${fmt(100 * num(r, 'mfu'))}%`,
      `${fmt(100 * num(r, 'mfu_vs_peak'))}%`]));
  const pairs = tr.filter((r) => r.impl === 'covenant').map((r) => [r, tr.find((t) => t.impl === 'torch' && t.preset === r.preset && t.T === r.T && t.B === r.B)] as const);
  if (torchVersion) {
    printTable('covenant against PyTorch (tokens/s ratio)', ['preset', 'B', 'T', 'covenant/torch'],
      pairs.map(([r, t]) => [String(r.preset), String(r.B), String(r.T), t ? `${fmt(num(r, 'tokens_per_s') / num(t, 'tokens_per_s'), 2)}×` : 'not run']));
    const [target] = pairs.filter(([r]) => r.preset === 'gpt2' && r.B === 4 && r.T === 64);
    if (target?.[1]) {
      const ratio = num(target[0], 'tokens_per_s') / num(target[1], 'tokens_per_s');
      console.log(`\ngpt2 B=4 T=64 ${threads} thread(s): ≥ 1.5× PyTorch: ${fmt(ratio, 2)}× (${ratio >= 1.5 ? 'met' : 'not met'})` +
        (threads === 2 ? '' : ' (the target is stated for 2 threads)'));
    } else {
      console.log('\ngpt2 B=4 T=64: ≥ 1.5× PyTorch: not measured (run without --quick)');
    }
  }
  writeResult('train', mach, rows);
}

// ---------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  nativeBin(); // every bench needs it (train for its limits): fail before measuring anything
  for (const name of opts.names) {
    if (name === 'gemm') benchGemm(opts);
    else if (name === 'attention') benchAttention(opts);
    else await benchTrain(opts);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});

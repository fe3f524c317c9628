// The attention bench: flash (fused) against naive causal attention, forward and backward, against the fp32 peak;
// then, where covenant_native_gpu_bench finds a CUDA device, the bf16 flash attention kernels on the GPU beside
// torch's scaled_dot_product_attention (FLASH and CUDNN backends) measured in the same run.
import os from 'node:os';

import { loadNote, machine, otherCpuBusy } from './machine';
import { gpuRecord, runGpuBench } from './gpu-bench';
import { measurePeak, runNative } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';
import { runTorchSdpa } from './torch-peer';

/** The GPU cases (covenant_native_gpu_bench attention and bench/peers/torch_sdpa.py take the same options). */
const GPU_B = 8;
const GPU_C = 2048;
const GPU_HEAD_SIZES = [64, 128];
/** The case the targets are stated at, and the targets: covenant's TFLOP/s over torch-flash's. */
const TARGET = { T: 4096, hs: 128, fwd: 1.0, bwd: 0.8 } as const;
const PEERS = ['torch-flash', 'torch-cudnn'] as const;
/** covenant's rows come once per B-operand loader of its kernels (row key b_loader); the first is the default. */
const B_LOADERS = ['ldmatrix', 'lds16'] as const;
/**
 * and once per staging of the streamed tiles, forward and backward (row key pipeline: true, cp.async
 * double-buffered, the default; false, plain loads and stores).
 */
const PIPELINES = [true, false] as const;

export function benchAttention(opts: BenchOptions): void {
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
  rows.push(...gpuAttention(opts, mach));
  writeResult('attention', mach, rows);
}

/**
 * The GPU rows: covenant's bf16 flash attention (impl 'covenant', device 'cuda', once per B loader and staging)
 * and the torch SDPA peer rows, printed with their ratios, plus one ratio row per case, loader, staging and peer
 * (kind 'ratio': covenant TFLOP/s over the peer's, with the target where one is set; the targets are judged on the
 * defaults: the ldmatrix loader, the pipelined staging).
 * Where there is no GPU: one line and one row saying why.
 */
export function gpuAttention(opts: BenchOptions, mach: Row): Row[] {
  const Ts = opts.quick ? [1024] : [1024, TARGET.T];
  const args = ['--B', String(GPU_B), '--T', Ts.join(','), '--C', String(GPU_C), '--hs', GPU_HEAD_SIZES.join(','),
    '--min-seconds', opts.quick ? '0.05' : '0.3'];
  process.stderr.write('attention: GPU rows (covenant_native_gpu_bench)...\n');
  const gpu = runGpuBench(['attention', ...args]);
  if (gpu.skipped !== undefined) {
    console.log(`\nGPU attention rows skipped: ${gpu.skipped}`);
    return [{ device: 'cuda', op: 'attention', skipped: gpu.skipped }];
  }
  mach.gpu = gpuRecord(gpu.device);
  process.stderr.write('attention: torch scaled_dot_product_attention peer (bench/peers/torch_sdpa.py)...\n');
  const peer = runTorchSdpa(args);
  const peerRows = typeof peer === 'string' ? [] : peer;
  const measured = [...gpu.rows, ...peerRows].filter((r) => r.skipped === undefined);

  /** covenant's variant of a row: its B loader and its staging. */
  interface Variant { loader: string; pipeline: boolean }
  const find = (impl: string, hs: number, T: number, causal: boolean, pass: string, v?: Variant) =>
    measured.find((r) => r.impl === impl && r.hs === hs && r.T === T && r.causal === causal && r.pass === pass &&
      (v === undefined || (r.b_loader === v.loader && r.pipeline === v.pipeline)));
  const ratios: Row[] = [];
  const body: string[][] = [];
  for (const hs of GPU_HEAD_SIZES)
    for (const T of Ts)
      for (const causal of [true, false])
        for (const pass of ['fwd', 'bwd'])
          for (const loader of B_LOADERS)
            for (const pipeline of PIPELINES) {
              const c = find('covenant', hs, T, causal, pass, { loader, pipeline });
              const ratio = (impl: string) => num(c, 'tflops') / num(find(impl, hs, T, causal, pass), 'tflops');
              const isDefault = loader === B_LOADERS[0] && pipeline;
              for (const impl of PEERS) {
                const target = hs === TARGET.hs && T === TARGET.T && impl === 'torch-flash' && isDefault
                  ? TARGET[pass as 'fwd' | 'bwd'] : undefined;
                if (c && find(impl, hs, T, causal, pass)) {
                  ratios.push({ kind: 'ratio', impl: 'covenant', b_loader: loader, pipeline,
                    against: impl, device: 'cuda', op: 'attention', dtype: 'bf16', pass, B: c.B, T, C: c.C, NH: c.NH, hs,
                    causal, ratio: ratio(impl), ...(target !== undefined ? { target } : {}) });
                }
              }
              const vs = (other: Variant) => {
                const r = num(c, 'tflops') / num(find('covenant', hs, T, causal, pass, other), 'tflops');
                return Number.isFinite(r) ? `${fmt(r, 2)}×` : '-';
              };
              body.push([String(hs), String(num(c, 'NH')), String(T), causal ? 'causal' : 'full', pass, loader,
                pipeline ? 'cp.async' : 'plain',
                fmt(num(c, 'seconds') * 1e3, 3), fmt(num(c, 'tflops'), 1),
                loader !== 'lds16' ? vs({ loader: 'lds16', pipeline }) : '-',
                pipeline ? vs({ loader, pipeline: false }) : '-',
                ...PEERS.map((impl) => fmt(num(find(impl, hs, T, causal, pass), 'tflops'), 1)),
                ...PEERS.map((impl) => (Number.isFinite(ratio(impl)) ? `${fmt(ratio(impl), 2)}×` : '-'))]);
            }
  console.log(`\nGPU attention, bf16, B=${GPU_B} C=${GPU_C} (NH = C/hs), on ${String(gpu.device.name)}; ` +
    'peer: torch scaled_dot_product_attention, FLASH and CUDNN backends, same shapes, same run');
  console.log('FLOPs: forward 4·B·NH·T²·hs, halved when causal; backward (alone, on the forward\'s out and lse) 2.5× forward.');
  console.log('staging: cp.async = the streamed tiles (fwd: K, V; bwd: K, V, then Q, dO, lse, delta) double-buffered by cp.async (the default), plain = loads and stores, one buffer.');
  printTable('GPU attention rows (ms = median rep, CUDA events; ratio = covenant TFLOP/s / peer TFLOP/s, or / its lds16 or plain-staging row\'s)',
    ['hs', 'NH', 'T', 'mask', 'pass', 'B loader', 'staging', 'ms', 'TFLOP/s', '÷ lds16', '÷ plain', 'flash TFLOP/s',
      'cudnn TFLOP/s', '÷ flash', '÷ cudnn'], body);
  if (typeof peer === 'string') console.log(`note: the torch peer rows are skipped: ${peer}`);
  for (const r of peerRows.filter((p) => p.skipped !== undefined && p.impl !== undefined)) {
    console.log(`note: ${String(r.impl)} refused hs=${String(r.hs)} T=${String(r.T)} ${r.causal ? 'causal' : 'full'}: ${String(r.skipped)}`);
  }
  if (!Ts.includes(TARGET.T)) {
    console.log(`targets (at T=${TARGET.T} hs=${TARGET.hs}) not measured: --quick runs T=${Ts.join(',')} only`);
  } else {
    for (const causal of [true, false]) {
      const at = (pass: string) => ratios.find((r) => r.against === 'torch-flash' && r.hs === TARGET.hs && r.T === TARGET.T &&
        r.causal === causal && r.pass === pass && r.b_loader === B_LOADERS[0] && r.pipeline === true);
      const say = (pass: 'fwd' | 'bwd') => {
        const r = num(at(pass), 'ratio');
        return `${pass} ${Number.isFinite(r) ? `${fmt(r, 2)}×` : '-'} (target ≥ ${fmt(TARGET[pass], 1)}×${Number.isFinite(r) ? (r >= TARGET[pass] ? ', met' : ', NOT met') : ', no peer row'})`;
      };
      console.log(`target, covenant (${B_LOADERS[0]}, pipelined) ÷ torch-flash at T=${TARGET.T} hs=${TARGET.hs} ${causal ? 'causal' : 'full'}: ` +
        `${say('fwd')}, ${say('bwd')}`);
    }
  }
  return [...gpu.rows, ...peerRows, ...ratios, ...(typeof peer === 'string' ? PEERS.map((impl) => ({ impl, device: 'cuda', op: 'attention', skipped: peer })) : [])];
}

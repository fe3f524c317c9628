// The train bench: engine tokens/s and MFU per preset, beside the PyTorch peer where /usr/bin/python3 has torch.
import { buildInfo } from '../src/native';
import { presetConfig } from '../src/train/model-config';
import { timeCovenant } from './engine-step';
import { loadNote, machine, otherCpuBusy } from './machine';
import { measurePeak, runNative } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';
import { PYTHON, timeTorch, torchAvailable } from './torch-peer';
import { STEP_OPTS, TrainCase } from './train-case';
import { gpuTrainRows } from './train-gpu';

export async function benchTrain(opts: BenchOptions): Promise<void> {
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
  // GPU rows: the CUDA engine against PyTorch on the same GPU (bench/train-gpu.ts).
  const gpu = await gpuTrainRows(opts.quick);
  if (gpu.skipped) {
    console.log(`\nGPU training rows skipped: ${gpu.skipped}`);
    rows.push({ impl: 'covenant', device: 'cuda', skipped: gpu.skipped });
  } else {
    const [cov, ...peers] = gpu.rows;
    console.log(`\nTraining on the GPU, ${String(cov.preset)} B=${String(cov.B)} T=${String(cov.T)}; MFU over ${String(cov.peak_tflops)} TFLOP/s dense bf16 (COVENANT_GPU_PEAK_TFLOPS)`);
    printTable('GPU training rows (seconds = median step)', ['impl', 's/step', 'tokens/s', 'MFU', 'covenant ÷ it'],
      gpu.rows.map((r) => [String(r.impl), fmt(num(r, 'seconds'), 4), fmt(num(r, 'tokens_per_s'), 0), `${fmt(100 * num(r, 'mfu'))}%`,
        r === cov ? '-' : `${fmt(num(r, 'covenant_ratio'), 2)}×`]));
    for (const n of gpu.notes) console.log(n);
    const compiled = peers.find((r) => r.impl === 'torch-compile');
    if (compiled) {
      const ratio = num(compiled, 'covenant_ratio');
      console.log(`gpt2 on the GPU: ≥ 1.0× torch.compile's tokens/s: ${fmt(ratio, 2)}× (${ratio >= 1 ? 'met' : 'not met'})`);
    }
    rows.push(...gpu.rows);
  }
  writeResult('train', mach, rows);
}

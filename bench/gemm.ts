// The GEMM bench: packed kernel, BLAS through our pool and OpenBLAS on its own threads, against the fp32 peak.
import os from 'node:os';

import { loadNote, machine, otherCpuBusy } from './machine';
import { envLabel, measurePeak, openblasEnvSet, runNative, withoutOpenblasEnv } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';

export function benchGemm(opts: BenchOptions): void {
  const threads = opts.threads ?? os.availableParallelism();
  const busy = otherCpuBusy();
  const peak = measurePeak(threads, opts.quick);
  const mach = machine({ threads, peak_gflops: peak.gflops, other_cpu_busy_start: busy });
  const common = ['gemm', '--threads', String(threads), '--sizes', opts.quick ? '256,512' : '256,512,1024,2048',
    '--min-seconds', opts.quick ? '0.05' : '0.3', ...(opts.quick ? ['--no-shapes'] : [])];

  // OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads, so the environment is varied per child
  // process: once as set, and, when either is set, once more with both removed (BLAS rows only).
  const envSet = openblasEnvSet(process.env);
  process.stderr.write(`gemm: ${threads} thread(s), OpenBLAS environment ${envLabel(process.env)}...\n`);
  const rows: Row[] = [peak, ...runNative(common)];
  if (envSet) {
    process.stderr.write('gemm: again with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (BLAS rows only)...\n');
    rows.push(...runNative([...common, '--blas-only'], withoutOpenblasEnv(process.env)));
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

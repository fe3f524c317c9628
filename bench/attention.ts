// The attention bench: flash (fused) against naive causal attention, forward and backward, against the fp32 peak.
import os from 'node:os';

import { loadNote, machine, otherCpuBusy } from './machine';
import { measurePeak, runNative } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num } from './row';
import { fmt, printTable } from './table';

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
  writeResult('attention', mach, rows);
}

// The quant bench: int8 quantize / dequantize / dequantize-accumulate / error-feedback compress throughput,
// against memcpy of the same fp32 bytes on the same threads (the limit), and the block-size sweep behind
// DEFAULT_QUANT_BLOCK: quantization error against the bytes the scales add.
import os from 'node:os';

import { DEFAULT_QUANT_BLOCK } from '../src/native';
import { loadNote, machine, otherCpuBusy } from './machine';
import { runNative } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';

const BLOCKS = [32, 64, 128, 256, 1024];

/**
 * Bits sent per element plus log2 of the relative RMS error: one more bit per element halves the error, so
 * this is the cost of a block size in bits at a common error level (lower is better).
 */
function bitsAtEqualError(r: Row): number {
  return 8 * num(r, 'bytes_per_element') + Math.log2(num(r, 'rel_rms_err'));
}

export function benchQuant(opts: BenchOptions): void {
  const threads = opts.threads ?? os.availableParallelism();
  const busy = otherCpuBusy();
  const mib = opts.quick ? 16 : 64;
  const mach = machine({ threads, other_cpu_busy_start: busy });
  process.stderr.write(`quant: ${mib} MiB of fp32, blocks ${BLOCKS.join(', ')}, ${threads} thread(s)...\n`);
  const rows = runNative(['quant', '--threads', String(threads), '--mib', String(mib), '--blocks', BLOCKS.join(','),
    '--min-seconds', opts.quick ? '0.05' : '0.3']);
  loadNote(mach);

  const memcpy = rows.find((r) => r.impl === 'limit' && r.op === 'memcpy');
  const limit = num(memcpy, 'GBps');
  const speed = rows.filter((r) => r.impl === 'covenant' && r.op !== 'error');
  console.log(`\nint8 quantization, ${mib} MiB of fp32, ${threads} thread(s), ${speed[0]?.isa ?? '?'} kernels; ` +
    `limit: memcpy of the same fp32 bytes on the same threads, ${fmt(limit, 1)} GB/s`);
  console.log('GB/s = fp32 bytes (n·4) per second, as memcpy; traffic counts every byte read or written. ' +
    'compress reads input and residual twice (scales first, so a bad input changes nothing).');
  printTable('Throughput (seconds = median rep)', ['block', 'op', 'ms', 'GB/s', '% memcpy', 'traffic GB/s'],
    speed.map((r) => [String(r.block), String(r.op), fmt(num(r, 'seconds') * 1e3, 2), fmt(num(r, 'GBps'), 1),
      `${fmt((100 * num(r, 'GBps')) / limit, 0)}%`, fmt(num(r, 'traffic_GBps'), 1)]));

  const err = rows.filter((r) => r.op === 'error');
  const kinds = [...new Set(err.map((r) => String(r.data)))];
  const at = (kind: string, block: number) => err.find((r) => r.data === kind && r.block === block);
  const best = new Map(kinds.map((k) => [k, Math.min(...BLOCKS.map((b) => bitsAtEqualError(at(k, b) ?? {})))]));
  const regret = (block: number) => Math.max(...kinds.map((k) => bitsAtEqualError(at(k, block) ?? {}) - (best.get(k) ?? NaN)));
  printTable('Block size: error of one round trip (relative RMS) against bytes sent; cost = 8·bytes/element + log2(error), ' +
    'regret = worst excess cost over the best block, across the data kinds',
    ['block', 'bytes/element', ...kinds.flatMap((k) => [`${k} err`, `${k} cost`]), 'regret (bits)'],
    BLOCKS.map((b) => [String(b), fmt(num(at(kinds[0], b), 'bytes_per_element'), 4),
      ...kinds.flatMap((k) => [num(at(k, b), 'rel_rms_err').toExponential(3), fmt(bitsAtEqualError(at(k, b) ?? {}), 3)]),
      fmt(regret(b), 3)]));
  const pick = BLOCKS.reduce((a, b) => (regret(b) < regret(a) ? b : a));
  console.log(`\nsmallest worst-case regret: block ${pick} (DEFAULT_QUANT_BLOCK is ${DEFAULT_QUANT_BLOCK}; the README's "int8 compression" adds a real pseudo-gradient)`);
  writeResult('quant', mach, rows);
}

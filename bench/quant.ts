// The quant bench: int8 quantize / dequantize / dequantize-accumulate / error-feedback compress throughput,
// against memcpy of the same fp32 bytes on the same threads (the limit), and the block-size sweep behind
// DEFAULT_QUANT_BLOCK: quantization error against the bytes the scales add; then, where
// covenant_native_gpu_bench finds a CUDA device, the same operations on the GPU against a device-to-device
// cudaMemcpy of the same bytes.
import os from 'node:os';

import { DEFAULT_QUANT_BLOCK } from '../src/native';
import { gpuRecord, runGpuBench } from './gpu-bench';
import { loadNote, machine, otherCpuBusy } from './machine';
import { runNative } from './native-bench';
import { BenchOptions } from './options';
import { writeResult } from './out';
import { num, Row } from './row';
import { fmt, printTable } from './table';

const BLOCKS = [32, 64, 128, 256, 1024];
/** The GPU rows' tensor size, and the target: quantize GB/s over the device copy's. */
const GPU_MIB = 256;
const GPU_TARGET = 0.9;

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
  const speed = rows.filter((r) => r.impl === 'covenant' && r.op !== 'error' && r.op !== 'crc32c');
  console.log(`\nint8 quantization, ${mib} MiB of fp32, ${threads} thread(s), ${speed[0]?.isa ?? '?'} kernels; ` +
    `limit: memcpy of the same fp32 bytes on the same threads, ${fmt(limit, 1)} GB/s`);
  console.log('GB/s = fp32 bytes (n·4) per second, as memcpy; traffic counts every byte read or written. ' +
    'compress reads input and residual twice (scales first, so a bad input changes nothing).');
  printTable('Throughput (seconds = median rep)', ['block', 'op', 'ms', 'GB/s', '% memcpy', 'traffic GB/s'],
    speed.map((r) => [String(r.block), String(r.op), fmt(num(r, 'seconds') * 1e3, 2), fmt(num(r, 'GBps'), 1),
      `${fmt((100 * num(r, 'GBps')) / limit, 0)}%`, fmt(num(r, 'traffic_GBps'), 1)]));

  // The all-reduce checksums every frame on one thread: CRC-32C per implementation, in cache and from memory.
  const crc = rows.filter((r) => r.op === 'crc32c');
  printTable(`CRC-32C, one thread (the all-reduce uses ${String(mach.crc32c)}); limit: memcpy ${fmt(limit, 1)} GB/s on ${threads} thread(s)`,
    ['implementation', 'bytes', 'ms', 'GB/s'],
    crc.map((r) => [String(r.crc), num(r, 'bytes') >= 1 << 20 ? `${fmt(num(r, 'bytes') / (1 << 20), 0)} MiB` : `${fmt(num(r, 'bytes') / 1024, 0)} KiB`,
      fmt(num(r, 'seconds') * 1e3, 3), fmt(num(r, 'GBps'), 1)]));

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
  rows.push(...gpuQuant(opts, mach));
  writeResult('quant', mach, rows);
}

/**
 * The GPU rows (device 'cuda'): the CUDA kernels at DEFAULT_QUANT_BLOCK against a device-to-device cudaMemcpy
 * of the same fp32 bytes (impl 'limit'), and one ratio row (kind 'ratio': quantize GB/s over the copy's, with
 * the target). Where there is no GPU: one line and one row saying why.
 */
export function gpuQuant(opts: BenchOptions, mach: Row): Row[] {
  const mib = opts.quick ? 64 : GPU_MIB;
  process.stderr.write(`quant: GPU rows (covenant_native_gpu_bench), ${mib} MiB, block ${DEFAULT_QUANT_BLOCK}...\n`);
  const gpu = runGpuBench(['quant', '--mib', String(mib), '--block', String(DEFAULT_QUANT_BLOCK),
    '--min-seconds', opts.quick ? '0.05' : '0.3']);
  if (gpu.skipped !== undefined) {
    console.log(`\nGPU quant rows skipped: ${gpu.skipped}`);
    return [{ device: 'cuda', op: 'quant', skipped: gpu.skipped }];
  }
  mach.gpu = gpuRecord(gpu.device);
  const copy = gpu.rows.find((r) => r.impl === 'limit' && r.op === 'memcpy');
  const limit = num(copy, 'GBps');
  console.log(`\nint8 quantization on ${String(gpu.device.name)}, ${mib} MiB of fp32, block ${DEFAULT_QUANT_BLOCK}; ` +
    `limit: device-to-device cudaMemcpy of the same fp32 bytes, ${fmt(limit, 1)} GB/s`);
  printTable('GPU throughput (ms = median rep, CUDA events; GB/s = fp32 bytes per second, as the copy)',
    ['op', 'ms', 'GB/s', '% copy', 'traffic GB/s'],
    gpu.rows.map((r) => [String(r.op), fmt(num(r, 'seconds') * 1e3, 3), fmt(num(r, 'GBps'), 1),
      `${fmt((100 * num(r, 'GBps')) / limit, 0)}%`, fmt(num(r, 'traffic_GBps'), 1)]));
  const quantize = gpu.rows.find((r) => r.impl === 'covenant' && r.op === 'quantize');
  const ratio = num(quantize, 'GBps') / limit;
  console.log(`target, quantize GB/s ÷ copy GB/s: ${fmt(ratio, 2)} (target ≥ ${GPU_TARGET}` +
    `${Number.isFinite(ratio) ? (ratio >= GPU_TARGET ? ', met' : ', NOT met') : ', not measured'})`);
  return [...gpu.rows, { kind: 'ratio', impl: 'covenant', against: 'limit', device: 'cuda', op: 'quantize',
    block: DEFAULT_QUANT_BLOCK, bytes: quantize?.bytes, ratio, target: GPU_TARGET }];
}

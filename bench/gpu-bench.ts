// Finding and running the CUDA bench executable, the GPU half of the attention and quant benches.
//
// The executable is build/bin/covenant_native_gpu_bench (native/bench/gpu_bench.cu), built only where CMake
// finds nvcc; COVENANT_GPU_BENCH_BIN overrides the path. Without a CUDA device it prints one row
// {"skipped": why} and exits 0. The GPU rows are optional: a missing executable, no device or a failed run
// is reported as a reason to print, never thrown, so the CPU rows of the same bench are still written (a
// failed run also sets a non-zero exit code).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { ROOT } from './root';
import { Row } from './row';

/** The GPU rows of one subcommand and the device they ran on, or why there are none. */
export type GpuResult = { rows: Row[]; device: Row; skipped?: undefined } | { skipped: string };

function gpuBin(): string {
  return process.env.COVENANT_GPU_BENCH_BIN ?? path.join(ROOT, 'build', 'bin', 'covenant_native_gpu_bench');
}

/** Runs the executable; its stderr passes through; its JSON rows, or why it failed. */
function runRows(bin: string, args: string[]): Row[] | string {
  const r = spawnSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.error) return `cannot run ${bin}: ${r.error.message}`;
  if (r.status !== 0) {
    process.exitCode = 1;
    return `${bin} ${args.join(' ')} failed (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`}); see its message above`;
  }
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Row);
}

/** `covenant_native_gpu_bench info`, then the subcommand `args`: its rows, or why there are none. */
export function runGpuBench(args: string[]): GpuResult {
  const bin = gpuBin();
  if (!fs.existsSync(bin)) {
    return { skipped: `${bin} does not exist (it is built only where CMake finds the CUDA toolkit, nvcc)` };
  }
  const info = runRows(bin, ['info']);
  if (typeof info === 'string') return { skipped: info };
  const device = info.find((r) => r.kind === 'info');
  if (!device) return { skipped: String(info.find((r) => r.skipped)?.skipped ?? 'covenant_native_gpu_bench info printed no device') };
  process.stderr.write(`GPU: ${String(device.name)} (${String(device.sm_count)} SMs, compute capability ${String(device.compute_capability)})\n`);
  const rows = runRows(bin, args);
  if (typeof rows === 'string') return { skipped: rows };
  const skip = rows.find((r) => r.skipped);
  if (skip) return { skipped: String(skip.skipped) };
  return { rows, device };
}

/** The machine record's `gpu` entry: the device's info row without its row keys. */
export function gpuRecord(device: Row): Row {
  const rec = { ...device };
  delete rec.kind;
  delete rec.device;
  return rec;
}

// The machine record of bench/out/NAME.json, and sampling how busy other processes keep the CPU.
import fs from 'node:fs';
import os from 'node:os';

import { nativeInfo, openblasEnv } from './native-bench';
import { Row } from './row';

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

/** CPU, memory, platform, the native build's GEMM setup and the OpenBLAS environment, then `extra`. */
export function machine(extra: Row): Row {
  const info = nativeInfo();
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
    crc32c: info.crc32c,
    openblas_env: openblasEnv(),
    loadavg_start: os.loadavg().map((x) => Number(x.toFixed(2))),
    date: new Date().toISOString(),
    ...extra,
  };
}

/** Fraction of all CPUs busy over `ms` while this process sleeps: what other processes are using. */
export function otherCpuBusy(ms = 1000): number | undefined {
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
export function loadNote(mach: Row): void {
  mach.other_cpu_busy_end = otherCpuBusy();
  const busy = [mach.other_cpu_busy_start, mach.other_cpu_busy_end].filter((x): x is number => typeof x === 'number');
  if (busy.some((x) => x > 0.1)) {
    console.log(`note: other processes kept ${busy.map((x) => `${Math.round(100 * x)}%`).join(' (start) and ')} (end) of the CPU busy ` +
      'around this bench, so the figures are low and noisy. Rerun on an idle machine to compare.');
  }
}

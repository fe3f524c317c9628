// Finding and running the native bench executable, and the OpenBLAS environment its children run under.
//
// The executable is build/bin/covenant_native_bench (native/bench/main.cpp, built by `npm ci` /
// `npm run build:native`); COVENANT_BENCH_BIN overrides the path. It checks every kernel against its
// reference before timing, and prints one JSON row per measurement on stdout.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { ROOT } from './root';
import { Row } from './row';

/** Read by OpenBLAS when it loads, so a bench varies them per child process. */
export const OPENBLAS_VARS = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

/** The path of the native bench executable; throws, with the fix, where it does not exist. */
export function nativeBin(): string {
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
export function runNative(args: string[], env: NodeJS.ProcessEnv = process.env): Row[] {
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

/** The row of `covenant_native_bench info`: what this build runs GEMM with. */
export interface NativeInfo {
  have_blas: boolean;
  blas_info: string;
  blas_core: string;
  packed_isa: string;
  gemm_default: string;
  crc32c: string;
}

export function nativeInfo(): NativeInfo {
  const [info] = runNative(['info']);
  return info as unknown as NativeInfo;
}

/** The fp32 FMA peak on `threads` threads: the limit every bench reports (impl 'limit'). */
export function measurePeak(threads: number, quick: boolean): Row {
  process.stderr.write(`measuring the fp32 FMA peak on ${threads} thread(s)...\n`);
  const [row] = runNative(['peak', '--threads', String(threads), '--min-seconds', quick ? '0.1' : '0.3']);
  return row;
}

// ---------------------------------------------------------------------------------------------------------
// OpenBLAS environment variants

/** Each OpenBLAS variable's value in `env`, 'unset' where it is not set (for the machine record). */
export function openblasEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of OPENBLAS_VARS) out[k] = env[k] ?? 'unset';
  return out;
}

/** 'unset' where neither variable is set, else `OPENBLAS_CORETYPE=… OPENBLAS_L2_SIZE=…`. */
export function envLabel(env: NodeJS.ProcessEnv): string {
  const set = OPENBLAS_VARS.filter((k) => env[k] !== undefined);
  return set.length === 0 ? 'unset' : OPENBLAS_VARS.map((k) => `${k}=${env[k] ?? 'unset'}`).join(' ');
}

/** Whether `env` sets either OpenBLAS variable. */
export function openblasEnvSet(env: NodeJS.ProcessEnv = process.env): boolean {
  return OPENBLAS_VARS.some((k) => env[k] !== undefined);
}

/** A copy of `env` with both OpenBLAS variables removed: OpenBLAS's own CPU detection. */
export function withoutOpenblasEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const unset = { ...env };
  for (const k of OPENBLAS_VARS) delete unset[k];
  return unset;
}

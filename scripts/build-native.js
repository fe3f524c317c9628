#!/usr/bin/env node
// Builds the native addon: cmake-js (Release, all cores) when cmake is on PATH, else node-gyp (CPU-only).
'use strict';
const { spawnSync } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const jobs = String(os.availableParallelism ? os.availableParallelism() : os.cpus().length);

function run(cmd, args) {
  console.log(`[covenant build] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs } });
  return r.status === 0;
}

function has(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
if (has('cmake')) {
  if (run(bin('cmake-js'), ['compile', '--config', 'Release', '--parallel', jobs])) process.exit(0);
  console.error('[covenant build] cmake-js failed; trying node-gyp (CPU-only fallback)');
} else {
  console.error('[covenant build] cmake not found; building with node-gyp (CPU-only fallback)');
}
const gyp = has(bin('node-gyp')) ? bin('node-gyp') : 'node-gyp';
if (run(gyp, ['rebuild', '-j', jobs])) process.exit(0);
console.error('[covenant build] native build failed. HINT: install cmake and a C++17 compiler (apt-get install cmake g++).');
process.exit(1);

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

// Without cmake, the native test and bench executables are compiled directly from binding.gyp's core sources.
function buildExecutablesWithoutCmake() {
  const fs = require('node:fs');
  const gypFile = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
  const core = gypFile.targets[0].sources.filter((s) => !s.startsWith('native/addon/'));
  const outDir = path.join(root, 'build', 'bin');
  fs.mkdirSync(outDir, { recursive: true });
  const cxx = process.env.CXX || 'c++';
  return [['covenant_native_tests', 'native/tests/main.cpp'], ['covenant_native_comm_tests', 'native/tests/comm_tests.cpp'], ['covenant_native_bench', 'native/bench/main.cpp']].every(([name, main]) =>
    run(cxx, ['-std=c++17', '-O3', '-DNDEBUG', '-Inative/include', ...core, main, '-lpthread', '-o', path.join(outDir, name)]));
}

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
if (has('cmake')) {
  if (run(bin('cmake-js'), ['compile', '--config', 'Release', '--parallel', jobs])) process.exit(0);
  console.error('[covenant build] cmake-js failed; trying node-gyp (CPU-only fallback)');
} else {
  console.error('[covenant build] cmake not found; building with node-gyp (CPU-only fallback)');
}
const gyp = has(bin('node-gyp')) ? bin('node-gyp') : 'node-gyp';
if (run(gyp, ['rebuild', '-j', jobs]) && buildExecutablesWithoutCmake()) process.exit(0);
console.error('[covenant build] native build failed. HINT: install cmake and a C++17 compiler (apt-get install cmake g++).');
process.exit(1);

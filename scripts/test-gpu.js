#!/usr/bin/env node
// `npm run test:gpu`: runs the native GPU suite (build/bin/covenant_native_gpu_tests, built by CMake only where
// it finds the CUDA toolkit). The suite itself skips, exit 0, where there is no CUDA device. Arguments are
// passed on (a test-name filter).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const bin = path.resolve(__dirname, '..', 'build', 'bin', 'covenant_native_gpu_tests');
if (!fs.existsSync(bin)) {
  console.log('GPU suite skipped: not built (no CUDA toolkit found by CMake; install one, then npm run build:native)');
  process.exit(0);
}
const r = spawnSync(bin, process.argv.slice(2), { stdio: 'inherit' });
if (r.error) {
  console.error(`test:gpu: cannot run ${bin}: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status === null ? 1 : r.status);

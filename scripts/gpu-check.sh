#!/usr/bin/env bash
# One pass of every check that needs a CUDA GPU, for a machine lent for a few minutes (an H100/H200 with the
# CUDA toolkit, cuBLAS, cmake and python3 with PyTorch; Node optional). From the repository root:
#   OUT=/some/dir bash scripts/gpu-check.sh            # default OUT: ./gpu-check-out
# Steps, each logged to $OUT/<step>.log, and a summary line per step in $OUT/summary.txt:
#   build      cmake (Release, sm_90 unless COVENANT_CUDA_ARCHS says otherwise) of the native targets, in
#              $BUILD_DIR (default build-gpu)
#   gpu-tests  $BUILD_DIR/bin/covenant_native_gpu_tests: every kernel against the CPU path, the 20-step engine run,
#              the round delta bit for bit (seed printed; COVENANT_GPU_TEST_SEED repeats it)
#   sanitize   compute-sanitizer racecheck and memcheck on the attention test of the default (ldmatrix) loader,
#              where the toolkit has it
#   attention  covenant_native_gpu_bench attention at B=8, T=1024,4096, D=64 (H=32) and 128 (H=16), beside
#              bench/peers/torch_sdpa.py (FLASH and CUDNN) in the same run  → $OUT/attention.jsonl
#   quant      covenant_native_gpu_bench quant --mib 256 (beside the device-to-device copy) → $OUT/quant.jsonl
#   node       where `node` runs (or .device/node.xz and .device/node_modules.tar.xz were carried): the addon
#              with CUDA, the jest GPU cases, and `npm run bench -- train` (GPU rows: gpt2 B=16 T=1024 beside
#              PyTorch eager and torch.compile)
# STEPS="build gpu-tests sanitize attention quant node" (the default) picks steps; the build step is needed once per
# machine. For a window of ~10 minutes, run the essentials first, in one call that fits the per-command limit:
#   STEPS="build gpu-tests attention quant" (correctness of every kernel, then the attention and quant figures),
# then, if time is left on the still-warm machine, STEPS="sanitize node" (the build stays in $BUILD_DIR). Exit status: non-zero when any step failed; a skipped step (no torch, no node) is not a failure.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-check-out}"
B="${BUILD_DIR:-build-gpu}"  # not build/: the addon's cmake-js build (the node step) keeps that one
mkdir -p "$OUT"
cd "$ROOT"
: >"$OUT/summary.txt"
failed=0
STEPS="${STEPS:-build gpu-tests sanitize attention quant node}"
step() {  # step NAME COMMAND...: runs it with its log, records ok/FAILED and the seconds it took
  local name=$1
  shift
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "$name: ok ($((SECONDS - t0)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "$name: FAILED ($((SECONDS - t0)) s; see $name.log)" | tee -a "$OUT/summary.txt"
    failed=1
  fi
}
skip() { echo "$1: skipped ($2)" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/device.txt" 2>&1 || true
JOBS=$(nproc)
build() {
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCOVENANT_CUDA_ARCHS="${COVENANT_CUDA_ARCHS:-90}" &&
    cmake --build "$B" -j "$JOBS" --target covenant_native_gpu_tests covenant_native_gpu_bench covenant_native_tests
}
step build build
if [ ! -x "$B"/bin/covenant_native_gpu_tests ]; then
  echo "no GPU test executable: stopping" | tee -a "$OUT/summary.txt"
  exit 1
fi
step gpu-tests "$B"/bin/covenant_native_gpu_tests
# Races between warps and out-of-bounds accesses in the attention kernels, on the tests' small sizes (what a
# CPU emulation of the kernels cannot show). Bounded, so a slow sanitizer cannot eat the device window.
sanitize() {
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 1 "$B"/bin/covenant_native_gpu_tests gpu_attention_ldmatrix &&
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 "$B"/bin/covenant_native_gpu_tests gpu_attention_ldmatrix
}
if command -v compute-sanitizer >/dev/null; then
  step sanitize sanitize
elif [[ " $STEPS " == *" sanitize "* ]]; then
  skip sanitize "no compute-sanitizer"
fi

attention() {
  "$B"/bin/covenant_native_gpu_bench attention --B 8 --T 1024,4096 --C 2048 --hs 64,128 >"$OUT/attention.jsonl" &&
    if python3 -c 'import torch' 2>/dev/null; then python3 bench/peers/torch_sdpa.py --B 8 --T 1024,4096 --C 2048 --hs 64,128 >>"$OUT/attention.jsonl"; fi
}
step attention attention
quant() { "$B"/bin/covenant_native_gpu_bench quant --mib 256 >"$OUT/quant.jsonl"; }
step quant quant

if [ -f .device/node.xz ] && ! command -v node >/dev/null; then
  xz -dc .device/node.xz >/usr/local/bin/node && chmod +x /usr/local/bin/node
fi
if [ -f .device/node_modules.tar.xz ] && [ ! -d node_modules ]; then tar -xJf .device/node_modules.tar.xz; fi
if [[ " $STEPS " != *" node "* ]]; then
  :
elif command -v node >/dev/null && [ -d node_modules ]; then
  node_checks() {
    node scripts/build-native.js &&
      node node_modules/typescript/bin/tsc -p . &&
      node node_modules/jest/bin/jest.js dist/test/engine-cuda.test.js dist/test/engine-delta.test.js &&
      node dist/bench/run.js train
  }
  step node node_checks
  cp bench/out/train.json "$OUT/train.json" 2>/dev/null || true
else
  skip node "no node and node_modules here: carry .device/node.xz and .device/node_modules.tar.xz"
fi
cat "$OUT/summary.txt"
exit $failed

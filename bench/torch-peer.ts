// Running the PyTorch peers with /usr/bin/python3, where it has torch: bench/peers/torch_gpt2_step.py (train)
// and bench/peers/torch_sdpa.py (the attention bench's GPU rows).
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { presetConfig } from '../src/train/model-config';
import { ROOT } from './root';
import { Row } from './row';
import { STEP_OPTS, TrainCase } from './train-case';

export const PYTHON = '/usr/bin/python3';
const TORCH_PEER = path.join(ROOT, 'bench', 'peers', 'torch_gpt2_step.py');
const SDPA_PEER = path.join(ROOT, 'bench', 'peers', 'torch_sdpa.py');

/** torch's version, or undefined where PYTHON cannot import it. */
export function torchAvailable(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Runs the peer on case `c`; its stderr passes through; returns the last JSON line it prints. */
export function timeTorch(c: TrainCase, threads: number): Row {
  const args = [TORCH_PEER, '--preset', c.preset, '--vocab', String(presetConfig(c.preset).vocabSize), '--B', String(c.B),
    '--T', String(c.T), '--threads', String(threads), '--steps', String(c.steps), '--warmup', String(c.warmup),
    '--lr', String(STEP_OPTS.lr), '--weight-decay', String(STEP_OPTS.weightDecay), '--grad-clip', String(STEP_OPTS.gradClip)];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`${PYTHON} ${args.join(' ')} failed (exit ${r.status}); see its message above`);
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error(`the torch peer printed no JSON line: ${r.stdout.slice(0, 400)}`);
  return JSON.parse(line) as Row;
}

/**
 * Runs the scaled_dot_product_attention peer with `args` (its options: --B, --T, --C, --hs, --min-seconds); its
 * stderr passes through; returns its JSON rows, or why there are none (the peer's own skip row: no torch, no
 * CUDA, a torch without torch.nn.attention; or its failure).
 */
export function runTorchSdpa(args: string[]): Row[] | string {
  const r = spawnSync(PYTHON, [SDPA_PEER, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.error) return `cannot run ${PYTHON}: ${r.error.message}`;
  if (r.status !== 0) return `${PYTHON} ${SDPA_PEER} ${args.join(' ')} failed (exit ${r.status}); see its message above`;
  const rows = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Row);
  const skip = rows.find((row) => row.skipped !== undefined && row.impl === undefined);
  return skip ? String(skip.skipped) : rows;
}

// The GPU half of the train bench: the CUDA engine (Engine.create({ device: 'cuda' })) on the gpt2 preset at
// B=16, T=1024, beside the same model in PyTorch on the same GPU (bf16 autocast, SDPA, fused AdamW), eager and
// with torch.compile (bench/peers/torch_gpt2_cuda.py). MFU = 6 · parameters · tokens/s over the GPU's dense
// bf16 peak: COVENANT_GPU_PEAK_TFLOPS, default 989 (H100/H200 SXM); say which GPU it was when comparing.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { buildInfo, Engine } from '../src/native';
import { presetConfig } from '../src/train/model-config';
import { timeCovenant } from './engine-step';
import { ROOT } from './root';
import { Row } from './row';
import { PYTHON } from './torch-peer';
import { STEP_OPTS, TrainCase } from './train-case';

const TORCH_CUDA_PEER = path.join(ROOT, 'bench', 'peers', 'torch_gpt2_cuda.py');

/** Why there is no CUDA engine here, or undefined when there is one. */
function cudaUnavailable(): string | undefined {
  if (!buildInfo().cuda) return 'this build has no CUDA backend';
  try {
    Engine.create({ model: presetConfig('tiny'), device: 'cuda', seed: 1 }).dispose();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

function torchRow(c: TrainCase, mode: 'eager' | 'compile'): Row | string {
  const args = [TORCH_CUDA_PEER, '--preset', c.preset, '--vocab', String(presetConfig(c.preset).vocabSize), '--B', String(c.B), '--T', String(c.T),
    '--mode', mode, '--steps', String(c.steps), '--warmup', String(c.warmup), '--lr', String(STEP_OPTS.lr),
    '--weight-decay', String(STEP_OPTS.weightDecay), '--grad-clip', String(STEP_OPTS.gradClip)];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 });
  if (r.error) return `cannot run ${PYTHON}: ${r.error.message}`;
  if (r.status !== 0) return `${PYTHON} ${args.join(' ')} failed (exit ${r.status})`;
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) return 'the torch CUDA peer printed no JSON line';
  const row = JSON.parse(line) as Row;
  return row.skipped !== undefined ? String(row.skipped) : row;
}

/** GPU training rows, or the reason they were skipped. */
export async function gpuTrainRows(quick: boolean): Promise<{ rows: Row[]; skipped?: string; notes: string[] }> {
  const why = cudaUnavailable();
  if (why) return { rows: [], skipped: why, notes: [] };
  const peakTflops = Number(process.env.COVENANT_GPU_PEAK_TFLOPS ?? 989);
  const c: TrainCase = quick ? { preset: 'gpt2', B: 4, T: 256, warmup: 2, steps: 3, torch: true } : { preset: 'gpt2', B: 16, T: 1024, warmup: 3, steps: 10, torch: true };
  const mfu = (params: number, tps: number) => (6 * params * tps) / (peakTflops * 1e12);
  process.stderr.write(`train: ${c.preset} B=${c.B} T=${c.T} covenant on the GPU...\n`);
  const cov = await timeCovenant(c, 1, 'cuda');
  const covTps = (c.B * c.T) / cov.seconds;
  const rows: Row[] = [{ impl: 'covenant', device: 'cuda', preset: c.preset, params: cov.params, B: c.B, T: c.T, steps: c.steps, warmup: c.warmup,
    seconds: cov.seconds, seconds_min: cov.seconds_min, tokens_per_s: covTps, mfu: mfu(cov.params, covTps), peak_tflops: peakTflops, final_loss: cov.loss }];
  const notes: string[] = [];
  for (const mode of ['eager', 'compile'] as const) {
    process.stderr.write(`train: ${c.preset} B=${c.B} T=${c.T} torch ${mode} on the GPU...\n`);
    const t = torchRow(c, mode);
    if (typeof t === 'string') {
      notes.push(`torch ${mode} rows skipped: ${t}`);
      continue;
    }
    const tps = Number(t.tokens_per_s);
    rows.push({ ...t, seconds: t.seconds_per_step, mfu: mfu(Number(t.params), tps), peak_tflops: peakTflops, covenant_ratio: covTps / tps });
  }
  return { rows, notes };
}

// `covenant train`: local training of a preset or configured model on a prepared data directory.
import fs from 'node:fs';
import path from 'node:path';
import { formatUsage, parseArgs, UsageError } from './args';
import { CliIO, defaultIO } from './io';
import { createProgress } from './progress';
import { PRESETS } from '../train/model-config';
import { numParams } from '../train/param-layout';
import { parseTrainConfig, readConfigFile } from '../train/train-config';
import { LATEST_CHECKPOINT, Trainer } from '../train/trainer';

export const TRAIN_SPEC = {
  config: { type: 'string', valueName: 'FILE', description: 'JSON file with any of the settings below (flags override it)' },
  preset: { type: 'string', choices: Object.keys(PRESETS), description: 'model preset (default tiny)' },
  data: { type: 'string', valueName: 'DIR', description: 'prepared data directory (covenant data prepare)' },
  out: { type: 'string', valueName: 'DIR', description: 'output directory for checkpoints' },
  steps: { type: 'int', min: 1, description: 'optimizer steps (default 1000)' },
  batchSize: { type: 'int', min: 1, description: 'sequences per step, B (default 4)' },
  seqLen: { type: 'int', min: 1, description: 'tokens per sequence, T (default 64)' },
  lr: { type: 'float', min: 0, description: 'peak learning rate (default 6e-4)' },
  warmupSteps: { type: 'int', min: 0, description: 'linear warm-up steps (default 20)' },
  minLrFraction: { type: 'float', min: 0, max: 1, description: 'cosine decay floor as a fraction of lr (default 0.1)' },
  weightDecay: { type: 'float', min: 0, description: 'AdamW decoupled weight decay on matrices (default 0.1)' },
  gradClip: { type: 'float', min: 0, description: 'global gradient-norm clip, 0 = off (default 1.0)' },
  evalInterval: { type: 'int', min: 0, description: 'val loss every N steps, 0 = at the end (default 100)' },
  evalBatches: { type: 'int', min: 1, description: 'val batches per evaluation (default 20)' },
  checkpointInterval: { type: 'int', min: 0, description: 'checkpoint every N steps, 0 = at the end (default 0)' },
  seed: { type: 'int', min: 0, description: 'seed of initialization and batch order (default 1337)' },
  threads: { type: 'int', min: 0, description: 'compute threads, 0 = all cores (default 0)' },
  maxSeconds: { type: 'float', min: 0, description: 'stop after about this long; the schedule is fitted to it (default 0 = no limit)' },
  resume: { type: 'bool', description: `continue from OUT/${LATEST_CHECKPOINT} (same parameters and optimizer state)` },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const TRAIN_USAGE = formatUsage('covenant train --data DIR --out DIR [--preset tiny|small|gpt2 | --config FILE] [flags]', TRAIN_SPEC);

export async function runTrain(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const args = parseArgs(argv, TRAIN_SPEC);
  if (args.help) {
    io.out(TRAIN_USAGE);
    return 0;
  }
  const fromFile = args.config ? readConfigFile(args.config) : {};
  const flags: Record<string, unknown> = {
    model: args.preset,
    data: args.data,
    outDir: args.out,
    steps: args.steps,
    batchSize: args.batchSize,
    seqLen: args.seqLen,
    lr: args.lr,
    warmupSteps: args.warmupSteps,
    minLrFraction: args.minLrFraction,
    weightDecay: args.weightDecay,
    gradClip: args.gradClip,
    evalInterval: args.evalInterval,
    evalBatches: args.evalBatches,
    checkpointInterval: args.checkpointInterval,
    seed: args.seed,
    threads: args.threads,
    maxSeconds: args.maxSeconds,
  };
  const merged = { ...fromFile, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
  if (merged.data === undefined) throw new UsageError('missing --data DIR (a directory written by `covenant data prepare`)');
  if (merged.outDir === undefined) throw new UsageError('missing --out DIR (where checkpoints go)');
  const cfg = parseTrainConfig(merged, args.config ? path.basename(args.config) : 'config');
  const trainer = new Trainer(cfg);
  const progress = createProgress();
  let stopping = false;
  const onSignal = () => {
    stopping = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const latest = path.join(cfg.outDir, LATEST_CHECKPOINT);
    if (args.resume) {
      if (!fs.existsSync(latest)) throw new UsageError(`--resume: no checkpoint at ${latest}`);
      const step = await trainer.resume(latest);
      progress.event('resume', { checkpoint: latest, step });
    }
    progress.event('train', {
      model: JSON.stringify(trainer.model),
      params: numParams(trainer.model),
      threads: trainer.engine.threads,
      tokensPerStep: cfg.batchSize * cfg.seqLen,
    });
    const result = await trainer.run({
      onStep: (e) => progress.step(e),
      onEval: (e) => progress.event('val', { step: e.step, valLoss: e.valLoss, batches: e.batches }),
      onCheckpoint: (file, step) => progress.event('checkpoint', { step, file }),
      shouldStop: () => stopping,
    });
    progress.done();
    progress.event('done', { steps: result.steps, loss: result.finalLoss, valLoss: result.valLoss ?? NaN, paramsHash: result.paramsHash });
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    trainer.dispose();
  }
}

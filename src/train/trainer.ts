// The local training loop: deterministic batches from the data loader, the lr schedule, AdamW steps on
// the engine, val loss at intervals, atomic checkpoints, and an exact resume from a checkpoint.
import fs from 'node:fs';
import path from 'node:path';
import { DataLoader } from '../data/loader';
import { manifestHash } from '../data/manifest';
import { CovenantError } from '../errors';
import { Engine } from '../native';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { learningRate, LrSchedule } from './lr-schedule';
import { ModelConfig } from './model-config';
import { resolveModel, TrainConfig } from './train-config';

export const LATEST_CHECKPOINT = 'latest.safetensors';

export interface StepEvent {
  step: number; // 1-based count of completed steps
  totalSteps: number;
  loss: number;
  gradNorm: number;
  lr: number;
  seconds: number;
  tokensPerSecond: number;
}

export interface EvalEvent {
  step: number;
  valLoss: number;
  batches: number;
}

export interface TrainerHooks {
  onStep?(e: StepEvent): void;
  onEval?(e: EvalEvent): void;
  onCheckpoint?(file: string, step: number): void;
  onResume?(file: string, step: number): void;
  /** Return true to stop after the current step (a checkpoint is still written). */
  shouldStop?(): boolean;
}

export interface TrainResult {
  steps: number;
  finalLoss: number;
  valLoss?: number;
  firstValLoss?: number;
  checkpoint: string;
  paramsHash: string;
}

export class Trainer {
  readonly model: ModelConfig;
  readonly engine: Engine;
  private readonly train: DataLoader;
  private readonly val: DataLoader | undefined;
  private startStep = 0;
  private totalSteps: number;

  constructor(readonly cfg: TrainConfig) {
    this.train = DataLoader.open(cfg.data, { split: 'train' });
    const hasVal = cfg.data && this.train.manifest.shards.some((s) => s.split === 'val' && s.tokens > cfg.seqLen);
    this.val = hasVal ? DataLoader.open(cfg.data, { split: 'val' }) : undefined;
    this.model = resolveModel(cfg, this.train.vocabSize);
    if (cfg.seqLen > this.model.maxSeqLen) {
      throw new RangeError(`config.seqLen (${cfg.seqLen}) exceeds the model's maxSeqLen (${this.model.maxSeqLen})`);
    }
    this.engine = Engine.create({ model: this.model, threads: cfg.threads || undefined, seed: cfg.seed });
    this.totalSteps = cfg.steps;
  }

  get dataHash(): string {
    return manifestHash(this.train.manifest);
  }

  /** Restores parameters, optimizer state and step from a checkpoint written by this trainer. */
  async resume(file: string): Promise<number> {
    const ck = await loadCheckpoint(file);
    const same = JSON.stringify(ck.model) === JSON.stringify(this.model);
    if (!same) {
      throw new CovenantError('CHECKPOINT_MISMATCH', `checkpoint ${file} holds model ${JSON.stringify(ck.model)} but this run trains ${JSON.stringify(this.model)}`);
    }
    if (ck.extra.data_sha256 && ck.extra.data_sha256 !== this.dataHash) {
      throw new CovenantError('CHECKPOINT_MISMATCH', `checkpoint ${file} was trained on data ${ck.extra.data_sha256.slice(0, 12)}… but --data has ${this.dataHash.slice(0, 12)}…. HINT: resume with the same data directory`);
    }
    if (!ck.adamM || !ck.adamV) throw new CovenantError('CHECKPOINT_MISMATCH', `checkpoint ${file} has no optimizer state, so it cannot resume training exactly`);
    this.engine.loadParams(ck.params);
    this.engine.loadOptimizerState(ck.adamM, ck.adamV, ck.step);
    this.startStep = ck.step;
    if (ck.extra.total_steps) this.totalSteps = Math.max(this.startStep, Number(ck.extra.total_steps));
    return ck.step;
  }

  private schedule(): LrSchedule {
    return { lr: this.cfg.lr, warmupSteps: this.cfg.warmupSteps, totalSteps: this.totalSteps, minLrFraction: this.cfg.minLrFraction };
  }

  async evaluate(): Promise<EvalEvent | undefined> {
    if (!this.val) return undefined;
    const { batchSize: B, seqLen: T, evalBatches } = this.cfg;
    let sum = 0;
    let n = 0;
    for (const batch of this.val.evalBatches(B, T, evalBatches)) {
      sum += await this.engine.evalLoss(batch, B, T);
      n++;
    }
    return n === 0 ? undefined : { step: this.startStep, valLoss: sum / n, batches: n };
  }

  async checkpoint(step: number): Promise<string> {
    fs.mkdirSync(this.cfg.outDir, { recursive: true });
    const file = path.join(this.cfg.outDir, LATEST_CHECKPOINT);
    await saveCheckpoint(file, {
      model: this.model,
      params: this.engine.params(),
      adamM: this.engine.adamM(),
      adamV: this.engine.adamV(),
      step,
      extra: {
        tokenizer: this.train.tokenizer,
        data_sha256: this.dataHash,
        total_steps: String(this.totalSteps),
        train_config: JSON.stringify(this.cfg),
      },
    });
    return file;
  }

  async run(hooks: TrainerHooks = {}): Promise<TrainResult> {
    const { batchSize: B, seqLen: T, seed } = this.cfg;
    const opt = { beta1: this.cfg.beta1, beta2: this.cfg.beta2, eps: this.cfg.eps, weightDecay: this.cfg.weightDecay, gradClip: this.cfg.gradClip };
    let firstVal: number | undefined;
    let lastVal: number | undefined;
    const doEval = async (step: number) => {
      const e = await this.evaluate();
      if (!e) return;
      e.step = step;
      if (firstVal === undefined) firstVal = e.valLoss;
      lastVal = e.valLoss;
      hooks.onEval?.(e);
    };
    if (this.startStep === 0) await doEval(0);
    const started = process.hrtime.bigint();
    let finalLoss = NaN;
    let step = this.startStep;
    let checkpointFile = '';
    while (step < this.totalSteps) {
      const lr = learningRate(step, this.schedule());
      const tokens = this.train.batch(step, B, T, seed);
      const t0 = process.hrtime.bigint();
      const r = await this.engine.step(tokens, B, T, { lr, ...opt });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (!Number.isFinite(r.loss)) {
        throw new CovenantError('TRAINING_DIVERGED', `loss became ${r.loss} at step ${step + 1} (lr ${lr.toExponential(2)}). HINT: lower --lr or raise --warmup-steps`);
      }
      finalLoss = r.loss;
      step++;
      hooks.onStep?.({ step, totalSteps: this.totalSteps, loss: r.loss, gradNorm: r.gradNorm, lr, seconds, tokensPerSecond: (B * T) / seconds });
      // With a time budget, re-plan the schedule once the first steps have shown the pace.
      if (this.cfg.maxSeconds > 0 && step === this.startStep + 3) {
        const perStep = Number(process.hrtime.bigint() - started) / 1e9 / 3;
        const fit = this.startStep + Math.floor(this.cfg.maxSeconds / perStep);
        this.totalSteps = Math.max(step, Math.min(this.totalSteps, fit));
      }
      const last = step >= this.totalSteps || hooks.shouldStop?.() === true;
      if ((this.cfg.evalInterval > 0 && step % this.cfg.evalInterval === 0) || last) await doEval(step);
      if ((this.cfg.checkpointInterval > 0 && step % this.cfg.checkpointInterval === 0) || last) {
        checkpointFile = await this.checkpoint(step);
        hooks.onCheckpoint?.(checkpointFile, step);
      }
      if (last) break;
    }
    if (!checkpointFile) checkpointFile = await this.checkpoint(step);
    return { steps: step, finalLoss, valLoss: lastVal, firstValLoss: firstVal, checkpoint: checkpointFile, paramsHash: this.engine.paramsHash() };
  }

  dispose(): void {
    this.engine.dispose();
  }
}

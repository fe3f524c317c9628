// The validator's useful-work check, after Templar's "Gauntlet" (public description): apply a member's
// compressed Δ to θ(r) and measure the loss, before and after, on windows the round assigned to the member
// and on as many windows it was not assigned. Honest training lowers the loss on its own windows, and by
// more than on data it never saw; a zero, stale or random-data Δ does neither.
import { assignedBatch, assignedStarts, windowSeed } from '../diloco/assignment';
import { DataLoader, windowStart } from '../data/loader';
import { Engine } from '../native';
import { CompressedDelta } from './delta-blocks';

export interface UsefulWorkInput {
  runSeed: number;
  round: number;
  peerId: string;
  innerSteps: number;
  B: number;
  T: number;
  /** Train shards per member and round (run config shardsPerRound). */
  shardsPerRound?: number;
  /** Batches evaluated on each side (spread over the inner steps); default 8, at most innerSteps. */
  batches?: number;
}

export interface UsefulWorkResult {
  assignedBefore: number;
  assignedAfter: number;
  controlBefore: number;
  controlAfter: number;
  /** Loss drop on the member's own windows, and on windows it was not assigned. */
  gainAssigned: number;
  gainControl: number;
  /** Per batch pair i: (drop on assigned batch i) − (drop on control batch i). */
  advantages: number[];
}

/** θ(r) − dequant(Δ): the member's local θ, as far as its compressed Δ tells. */
export function applyDelta(theta: Float32Array, d: CompressedDelta): Float32Array {
  const out = new Float32Array(theta.length);
  for (let i = 0; i < theta.length; i++) out[i] = theta[i] - d.codes[i] * d.scales[Math.floor(i / d.block)];
  return out;
}

async function losses(engine: Engine, batches: Int32Array[], B: number, T: number): Promise<number[]> {
  const out: number[] = [];
  for (const b of batches) out.push(await engine.evalLoss(b, B, T));
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The inner steps whose windows the check evaluates: `batches` of them, spread over the round. */
function checkedSteps(x: UsefulWorkInput): number[] {
  const k = checkBatchCount(x);
  return Array.from({ length: k }, (_, i) => Math.floor((i * x.innerSteps) / k));
}

/** How many batches per side the check evaluates. */
export function checkBatchCount(x: Pick<UsefulWorkInput, 'batches' | 'innerSteps'>): number {
  return Math.max(1, Math.min(x.batches ?? 8, x.innerSteps));
}

/** Start of every (T+1)-token window the check reads: what a validator without the whole corpus must fetch. */
export function checkWindowStarts(loader: DataLoader, x: UsefulWorkInput): number[] {
  const controlSeed = windowSeed(x.runSeed, x.round, `control|${x.peerId}`);
  const out: number[] = [];
  for (const s of checkedSteps(x)) {
    out.push(...assignedStarts(loader, x.runSeed, x.round, x.peerId, s, x.B, x.T, x.shardsPerRound ?? 0));
    for (let b = 0; b < x.B; b++) out.push(windowStart(controlSeed, s, b, loader.numTokens - x.T));
  }
  return out;
}

/** The check's result from its per-batch losses (the validator's measurement, its own or a member validator's). */
export function usefulWorkFromLosses(l: CheckLosses): UsefulWorkResult {
  const advantages = l.assignedBefore.map((_, i) => l.assignedBefore[i] - l.assignedAfter[i] - (l.controlBefore[i] - l.controlAfter[i]));
  const [assignedBefore, assignedAfter, controlBefore, controlAfter] = [l.assignedBefore, l.assignedAfter, l.controlBefore, l.controlAfter].map(mean);
  return { assignedBefore, assignedAfter, controlBefore, controlAfter, gainAssigned: assignedBefore - assignedAfter, gainControl: controlBefore - controlAfter, advantages };
}

/** Per-batch losses of the check, before and after the Δ, on the member's windows and the control windows. */
export interface CheckLosses {
  assignedBefore: number[];
  assignedAfter: number[];
  controlBefore: number[];
  controlAfter: number[];
}

/** Measures the check's losses on `engine` (its parameters are overwritten). */
export async function measureUsefulWork(engine: Engine, loader: DataLoader, theta: Float32Array, d: CompressedDelta, x: UsefulWorkInput): Promise<CheckLosses> {
  const steps = checkedSteps(x);
  const assigned = steps.map((s) => assignedBatch(loader, x.runSeed, x.round, x.peerId, s, x.B, x.T, x.shardsPerRound ?? 0));
  const controlSeed = windowSeed(x.runSeed, x.round, `control|${x.peerId}`);
  const control = steps.map((s) => loader.batch(s, x.B, x.T, controlSeed));
  engine.loadParams(theta);
  const assignedBefore = await losses(engine, assigned, x.B, x.T);
  const controlBefore = await losses(engine, control, x.B, x.T);
  engine.loadParams(applyDelta(theta, d));
  const assignedAfter = await losses(engine, assigned, x.B, x.T);
  const controlAfter = await losses(engine, control, x.B, x.T);
  return { assignedBefore, assignedAfter, controlBefore, controlAfter };
}

/** Runs the check on `engine` (its parameters are overwritten). */
export async function usefulWork(engine: Engine, loader: DataLoader, theta: Float32Array, d: CompressedDelta, x: UsefulWorkInput): Promise<UsefulWorkResult> {
  return usefulWorkFromLosses(await measureUsefulWork(engine, loader, theta, d, x));
}

export interface UsefulWorkVerdict {
  ok: boolean;
  reason?: string;
}

/**
 * Pass when the Δ lowers the loss on the member's own windows (by more than minGain nats) and its gain there
 * is not significantly below its gain on the control windows (mean advantage + z · standard error ≥ 0).
 * Early in training almost everything a model learns generalizes, so an honest advantage can be a hair below
 * zero; the test asks for evidence of the opposite (z = 4), not for a margin that noise could deny. An honest
 * round can still fail now and then (right after an overshooting outer step the loss may rise everywhere),
 * which is why the coordinator excludes on a second such failure only (a "strike"), not on the first.
 */
export function judgeUsefulWork(r: UsefulWorkResult, minGain = 1e-4, z = 4): UsefulWorkVerdict {
  if (!(r.gainAssigned > minGain)) return { ok: false, reason: `useful-work: the Δ changes the loss on its own windows by ${(-r.gainAssigned).toFixed(5)} nats (no gain)` };
  const n = r.advantages.length;
  const m = n ? r.advantages.reduce((a, b) => a + b, 0) / n : 0;
  const sd = n > 1 ? Math.sqrt(r.advantages.reduce((a, b) => a + (b - m) * (b - m), 0) / (n - 1)) : 0;
  if (m + (z * sd) / Math.sqrt(Math.max(1, n)) < 0) {
    return { ok: false, reason: `useful-work: gain on its own windows ${r.gainAssigned.toFixed(5)} is significantly below the gain on windows it was not given ${r.gainControl.toFixed(5)}` };
  }
  return { ok: true };
}

// Training metrics of a worker's inner loop: loss, tokens, inner steps and how long each step takes.
// The worker calls observeStep() after every inner step and startRound() when a round's inner loop begins;
// throughput on the dashboard is rate(covenant_train_tokens_total[…]).
import type { Counter, Gauge, Histogram } from 'prom-client';
import { count, MetricsRegistry, nonNegative } from './registry';

/**
 * Inner-step duration buckets (seconds), 5 ms to 2 min: the `tiny` preset on a CPU takes milliseconds a
 * step, `small` tens to hundreds of milliseconds, `gpt2` (124M) from about 0.1 s on a GPU to tens of
 * seconds on a 2-core CPU (B=4, T=1024). Roughly ×2–2.5 per bucket, so any quantile is within that factor.
 */
export const STEP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;

export interface StepObservation {
  /** Training loss of the step (nats per token). NaN is recorded as is: it is news. */
  loss: number;
  /** Tokens the step trained on (B × T). */
  tokens: number;
  /** Wall time of the step. */
  seconds: number;
  /** Learning rate the step used. */
  lr?: number;
  /** Global gradient norm before clipping. */
  gradNorm?: number;
}

export class TrainingMetrics {
  readonly loss: Gauge;
  readonly valLoss: Gauge;
  readonly tokens: Counter;
  readonly innerSteps: Counter;
  readonly stepDuration: Histogram;
  readonly innerStep: Gauge;
  readonly innerStepsPerRound: Gauge;
  readonly learningRate: Gauge;
  readonly gradNorm: Gauge;

  constructor(registry: MetricsRegistry) {
    this.loss = registry.gauge({ name: 'covenant_train_loss', help: 'Training loss of the last inner step (nats per token); NaN before the first step.' });
    this.valLoss = registry.gauge({ name: 'covenant_train_val_loss', help: 'Last validation loss (nats per token); NaN until measured.' });
    this.tokens = registry.counter({ name: 'covenant_train_tokens_total', help: 'Tokens trained on in inner steps.' });
    this.innerSteps = registry.counter({ name: 'covenant_train_inner_steps_total', help: 'Inner optimizer steps completed.' });
    this.stepDuration = registry.histogram({
      name: 'covenant_train_step_duration_seconds',
      help: 'Wall time of one inner step (forward, backward, optimizer).',
      buckets: STEP_DURATION_BUCKETS,
    });
    this.innerStep = registry.gauge({ name: 'covenant_train_inner_step', help: 'Inner steps done in the current round (0..H).' });
    this.innerStepsPerRound = registry.gauge({ name: 'covenant_train_inner_steps_per_round', help: 'Inner steps per round (H) of the run.' });
    this.learningRate = registry.gauge({ name: 'covenant_train_learning_rate', help: 'Inner learning rate of the last step.' });
    this.gradNorm = registry.gauge({ name: 'covenant_train_grad_norm', help: 'Global gradient norm of the last inner step, before clipping.' });
    this.loss.set(NaN);
    this.valLoss.set(NaN);
    this.learningRate.set(NaN);
    this.gradNorm.set(NaN);
  }

  /** A round's inner loop begins: H inner steps to go. */
  startRound(innerStepsPerRound: number): void {
    this.innerStepsPerRound.set(count('innerStepsPerRound', innerStepsPerRound));
    this.innerStep.set(0);
  }

  /** One inner step finished. */
  observeStep(s: StepObservation): void {
    if (typeof s !== 'object' || s === null) throw new TypeError('observeStep needs { loss, tokens, seconds }');
    if (typeof s.loss !== 'number') throw new TypeError(`Expected a number for loss but received ${typeof s.loss}`);
    const tokens = count('tokens', s.tokens);
    const seconds = nonNegative('seconds', s.seconds);
    this.loss.set(s.loss);
    this.tokens.inc(tokens);
    this.innerSteps.inc();
    this.innerStep.inc();
    this.stepDuration.observe(seconds);
    if (s.lr !== undefined) this.learningRate.set(nonNegative('lr', s.lr));
    if (s.gradNorm !== undefined) this.gradNorm.set(typeof s.gradNorm === 'number' ? s.gradNorm : NaN);
  }

  /** A validation loss was measured. */
  setValLoss(loss: number): void {
    if (typeof loss !== 'number') throw new TypeError(`Expected a number for loss but received ${typeof loss}`);
    this.valLoss.set(loss);
  }
}

// The validator role in a member (the run config's `validators` names its peer id). The coordinator assigns
// it useful-work checks of other members; on a heartbeat that says some wait, it takes them one at a time
// (FetchCheck: the task, then the checked member's compressed Δ), measures the check's losses on an engine of
// its own against θ(round − 1), which it holds from having started that round, on the checked member's windows
// and the control windows (fetching the shards they need), and sends the losses back (SubmitCheck). What it
// cannot do (θ not held, a broken payload, an engine failure) it declines with the reason, so the coordinator
// can fall back; training goes on beside it.
import { DataLoader } from '../data/loader';
import { errorMessage } from '../errors';
import { Logger } from '../log';
import { Engine } from '../native';
import type { SignedClient } from '../swarm/grpc-client';
import { CheckTask, CoordinatorMethods } from '../swarm/proto';
import type { RunConfig } from '../swarm/run-config';
import { decodeDelta, sha256Hex } from '../trust/delta-blocks';
import { checkWindowStarts, measureUsefulWork, UsefulWorkInput } from '../trust/useful-work';

/** θs kept by hash: the round being trained and the one before, enough for checks that arrive a round late. */
const KEEP_THETAS = 3;

export interface MemberValidatorOptions {
  client: SignedClient<CoordinatorMethods>;
  cfg: RunConfig;
  /** The train split (windows of other members come from it too). */
  loader: DataLoader;
  /** Makes sure the shards holding these (T+1)-token windows are here. */
  ensureWindows: (starts: number[]) => Promise<void>;
  logger: Logger;
  signal: AbortSignal;
  /** Test-only (COVENANT_TEST_HOSTILE=lying-validator): report no gain for everyone checked. */
  lie?: boolean;
  /** Called for each check it answered. */
  onCheck?: (result: 'submitted' | 'declined') => void;
}

export class MemberValidator {
  readonly #o: MemberValidatorOptions;
  readonly #thetas = new Map<string, Float32Array>();
  #engine: Engine | undefined;
  #running: Promise<void> | undefined;

  constructor(o: MemberValidatorOptions) {
    this.#o = o;
  }

  /** Keeps θ (not copied: the worker replaces its θ, never writes into it) under its hash. */
  remember(thetaSha256: string, theta: Float32Array): void {
    if (!thetaSha256 || this.#thetas.has(thetaSha256)) return;
    this.#thetas.set(thetaSha256, theta);
    while (this.#thetas.size > KEEP_THETAS) this.#thetas.delete(this.#thetas.keys().next().value as string);
  }

  /** The heartbeat said `waiting` checks are assigned to this member: take them unless already at it. */
  poke(waiting: number): void {
    if (waiting <= 0 || this.#running || this.#o.signal.aborted) return;
    this.#running = this.#drain()
      .catch((e) => this.#o.logger.warn('validator.error', { error: errorMessage(e) }))
      .finally(() => {
        this.#running = undefined;
      });
  }

  async close(): Promise<void> {
    await this.#running;
    this.#engine?.dispose();
    this.#engine = undefined;
  }

  async #drain(): Promise<void> {
    for (;;) {
      if (this.#o.signal.aborted) return;
      const taken = await this.#take();
      if (!taken) return;
      await this.#run(taken.task, taken.payload);
    }
  }

  async #take(): Promise<{ task: CheckTask; payload: Buffer } | undefined> {
    let task: CheckTask | undefined;
    let payload: Buffer | undefined;
    let got = 0;
    for await (const c of this.#o.client.stream('fetchCheck', {}, { signal: this.#o.signal })) {
      if (!task) {
        if (!c.task || c.offset !== 0) throw new Error('FetchCheck: the first chunk carries no task');
        task = c.task;
        payload = Buffer.alloc(task.totalBytes);
      }
      if (c.offset !== got || got + c.data.length > payload!.length) throw new Error(`FetchCheck: chunk at ${c.offset} (+${c.data.length}) does not continue ${got} of ${payload!.length} bytes`);
      c.data.copy(payload!, got);
      got += c.data.length;
    }
    if (!task) return undefined;
    if (got !== payload!.length) throw new Error(`FetchCheck: the stream ended after ${got} of ${payload!.length} bytes`);
    return { task, payload: payload! };
  }

  async #run(task: CheckTask, payload: Buffer): Promise<void> {
    const { cfg, logger } = this.#o;
    const t0 = Date.now();
    const base = { round: task.round, peerId: task.peerId, deltaSha256: task.deltaSha256, prevThetaSha256: task.prevThetaSha256 };
    const decline = async (reason: string) => {
      logger.warn('validator.decline', { round: task.round, peerId: task.peerId, reason });
      await this.#o.client.call('submitCheck', { ...base, declined: true, reason }, { signal: this.#o.signal });
      this.#o.onCheck?.('declined');
    };
    if (sha256Hex(payload) !== task.deltaSha256) return decline('the Δ received does not match its SHA-256');
    const theta = this.#thetas.get(task.prevThetaSha256);
    if (!theta) return decline(`θ ${task.prevThetaSha256.slice(0, 16)}… (round ${task.round - 1}) is not held here`);
    const x: UsefulWorkInput = { runSeed: cfg.seed, round: task.round, peerId: task.peerId, innerSteps: cfg.innerSteps, B: cfg.batchSize, T: cfg.seqLen, shardsPerRound: cfg.shardsPerRound, batches: task.batches };
    let losses;
    try {
      const d = decodeDelta(payload, theta.length, cfg.blockSize);
      await this.#o.ensureWindows(checkWindowStarts(this.#o.loader, x));
      this.#engine ??= Engine.create({ model: cfg.model, seed: cfg.seed, threads: 1 });
      losses = await measureUsefulWork(this.#engine, this.#o.loader, theta, d, x);
      if (this.#o.lie) losses.assignedAfter = losses.assignedBefore.map((l) => l + 0.01);
    } catch (e) {
      if (this.#o.signal.aborted) return;
      return decline(`the check failed here: ${errorMessage(e)}`);
    }
    const res = await this.#o.client.call('submitCheck', { ...base, ...losses }, { signal: this.#o.signal });
    this.#o.onCheck?.('submitted');
    logger.info('validator.check', { round: task.round, peerId: task.peerId, accepted: res.accepted, seconds: (Date.now() - t0) / 1000 });
  }
}

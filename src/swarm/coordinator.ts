// The coordinator process: loads (or initializes and saves) the committed global state from its state
// directory, opens the round log, and serves the Coordinator service (Join, Heartbeat, Leave, GetPlan,
// ReportRound, FetchState) behind SignedServer, with timers that drop silent members and move the round
// planner along, and optionally /metrics, /healthz and /readyz.
// A planner commit becomes the new global state through CommitApplier (commit-applier.ts): one committed
// member uploads the round's averaged pseudo-gradient and the coordinator applies the outer step itself.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { DataLoader, datasetInfo } from '../data/loader';
import { ShardServer } from '../data/shard-service';
import { commitBody, missedCommits } from '../ledger/commit-entry';
import { SignedRecord } from '../ledger/entry';
import { CommitmentBook } from '../trust/commitments';
import { CheckDelegation } from '../trust/check-delegation';
import { RoundVerifier } from '../trust/round-verifier';
import { auditTranscripts } from '../trust/transcripts';
import { RingAudit } from '../trust/ring-audit';
import { Ledger } from '../ledger/ledger';
import { streamLedger } from '../ledger/stream';
import { Logger } from '../log';
import { CoordinatorMetrics, initCoordinatorMetrics } from '../metrics';
import { ListenAddress, MetricsServer } from '../metrics/http';
import { Engine } from '../native';
import { numParams } from '../train/param-layout';
import { createCoordinatorHandlers, createRoundHandlers, membershipEventSink, plannerEventSink } from './coordinator-service';
import { GlobalState, globalStatePath, loadGlobalState, makeGlobalState, saveGlobalState } from './global-state';
import { SignedServer } from './grpc-server';
import { loadOrCreateIdentity } from './identity';
import { Membership } from './membership';
import { coordinatorService, FetchShardRequest } from './proto';
import { RoundLog } from './round-log';
import { RpcError } from './rpc-error';
import { PlannerEvent, RoundPlanner } from './round-planner';
import { RunConfig } from './run-config';
import { canonicalJson, RequestVerifier } from './signed-request';
import { CommitApplier } from './commit-applier';
import { statePayload, streamState } from './state-stream';

/** Rounds within which a second statistical failure excludes a member. */
const STRIKE_WINDOW = 4;

export interface CoordinatorOptions {
  config: RunConfig;
  stateDir: string;
  /** gRPC listen address 'host:port' (port 0: a free one). */
  listen: string;
  /** Where to serve /metrics, /healthz, /readyz; none when undefined. */
  metrics?: ListenAddress;
  logger: Logger;
  /** Planner tick interval, ms (default 250). */
  tickMs?: number;
  /** The run's prepared data: enables the validator's useful-work check (without it only commitments are checked). */
  dataDir?: string;
}

/** θ from the model config's seed (the same as every worker's Engine.create), momentum zeros, round 0. */
export function initialGlobalState(config: RunConfig): GlobalState {
  const engine = Engine.create({ model: config.model, seed: config.seed, threads: 1 });
  try {
    const theta = Float32Array.from(engine.params());
    return makeGlobalState(0, theta, new Float32Array(theta.length));
  } finally {
    engine.dispose();
  }
}

export class Coordinator {
  readonly config: RunConfig;
  readonly stateDir: string;
  readonly #opts: CoordinatorOptions;
  readonly #log: Logger;
  #state: GlobalState | undefined;
  #roundLog: RoundLog | undefined;
  #membership: Membership | undefined;
  #planner: RoundPlanner | undefined;
  #applier: CommitApplier | undefined;
  #ledger: Ledger | undefined;
  #validatorEngine: Engine | undefined;
  #verifier: RoundVerifier | undefined;
  #delegation: CheckDelegation | undefined;
  #server: SignedServer | undefined;
  #metricsServer: MetricsServer | undefined;
  #metrics: CoordinatorMetrics | undefined;
  #timers: NodeJS.Timeout[] = [];
  #port: number | undefined;
  #ready = false;
  #stopping: Promise<void> | undefined;

  constructor(opts: CoordinatorOptions) {
    this.#opts = opts;
    this.config = opts.config;
    this.stateDir = opts.stateDir;
    this.#log = opts.logger.child({ role: 'coordinator', runId: opts.config.runId });
  }

  /** The committed global state (after start()). */
  get state(): GlobalState {
    if (!this.#state) throw new Error('Coordinator.state: call start() first');
    return this.#state;
  }

  /** The bound gRPC port (after start()). */
  get port(): number {
    if (this.#port === undefined) throw new Error('Coordinator.port: call start() first');
    return this.#port;
  }

  /** Rounds the planner committed whose update has not been applied yet. */
  get pendingCommits(): number[] {
    return this.#applier?.pendingRounds ?? [];
  }

  get metricsAddress(): ListenAddress | undefined {
    return this.#metricsServer?.address();
  }

  async start(): Promise<void> {
    const cfg = this.config;
    const log = this.#log;
    if (this.#opts.metrics) {
      this.#metrics = initCoordinatorMetrics();
      this.#metricsServer = new MetricsServer({
        registry: this.#metrics.registry,
        host: this.#opts.metrics.host,
        port: this.#opts.metrics.port,
        readiness: () => (this.#ready ? true : { ok: false, reason: 'starting' }),
        log,
      });
    }

    // Global state: load it, or initialize θ from the seed and save it before serving anything.
    const expected = numParams(cfg.model);
    let state = await loadGlobalState(this.stateDir);
    if (state) {
      if (state.theta.length !== expected) {
        throw new RangeError(
          `global state ${globalStatePath(this.stateDir)} holds ${state.theta.length} parameters but the run's model has ${expected}; it belongs to another run (use another --state directory)`,
        );
      }
      log.info('state.load', { round: state.round, thetaSha256: state.thetaHash, params: expected, file: globalStatePath(this.stateDir) });
    } else {
      state = initialGlobalState(cfg);
      await saveGlobalState(this.stateDir, state);
      log.info('state.init', { round: state.round, thetaSha256: state.thetaHash, params: expected, seed: cfg.seed, file: globalStatePath(this.stateDir) });
    }
    this.#state = state;

    const opened = await RoundLog.open(this.stateDir);
    this.#roundLog = opened.log;
    if (opened.torn) log.warn('roundlog.torn', { file: opened.log.file, line: opened.torn.line, bytes: opened.torn.bytes });
    log.info('roundlog.open', { file: opened.log.file, entries: opened.entries.length, lastRound: opened.log.lastRound });

    const metrics = this.#metrics;
    const identity = loadOrCreateIdentity(this.stateDir);
    const openedLedger = await Ledger.open(this.stateDir, identity, {
      runId: cfg.runId,
      coordinatorPeerId: identity.peerId,
      coordinatorPublicKey: identity.publicKey.toString('base64'),
      runConfigSha256: crypto.createHash('sha256').update(canonicalJson(cfg)).digest('hex'),
      round: state.round,
      thetaSha256: state.thetaHash,
    });
    const ledger = openedLedger.ledger;
    this.#ledger = ledger;
    if (openedLedger.tornBytes) log.warn('ledger.torn', { file: ledger.file, bytes: openedLedger.tornBytes });
    log.info('ledger.open', { file: ledger.file, entries: ledger.length, coordinatorPeerId: identity.peerId });
    for (const body of missedCommits(ledger.entries(), opened.entries, state, cfg)) {
      await ledger.append('commit', body as unknown as Record<string, unknown>);
      log.warn('ledger.recovered', { round: body.round, reason: 'saved before the coordinator stopped, not verified' });
    }
    const record = (type: 'join' | 'leave' | 'drop' | 'commit' | 'abandon', body: Record<string, unknown>) =>
      ledger.append(type, body).then(
        () => metrics?.trust.ledgerEntry(type),
        (e) => log.error('ledger.append-failed', { type, error: e }),
      );
    const membershipLog = membershipEventSink(log, metrics?.membership);
    const membership = new Membership({
      heartbeatTimeoutMs: cfg.heartbeatTimeoutMs,
      onEvent: (e) => {
        membershipLog(e);
        if (e.type === 'join' && e.rejoin) return;
        void record(e.type, { peerId: e.member.peerId, address: e.member.address, ...(e.type === 'leave' ? { reason: e.reason } : {}) });
      },
    });
    this.#membership = membership;
    let commitEntries: Promise<void> = Promise.resolve();
    const strikesOf = new Map<string, number[]>();
    const applier = new CommitApplier({
      stateDir: this.stateDir,
      state: () => this.state,
      setState: (s) => {
        this.#state = s;
      },
      roundLog: this.#roundLog,
      outer: { lr: cfg.outerLr, momentum: cfg.outerMomentum },
      logger: log,
      onApplied: (c, seconds, reports, prev, update) => {
        metrics?.membership.roundCommitted(seconds);
        verifier.setPrevState(c.round, prev);
        audit.setUpdate(c.round, update, reports);
        // Commit entries go into the ledger in round order, each once its checks are in.
        commitEntries = commitEntries.then(async () => {
          const checks = new Map(await verifier.result(c.round));
          const ringAudit = await audit.result(c.round);
          if (ringAudit && !ringAudit.ok && !ringAudit.incomplete) {
            // The agreed average does not follow from the commitments: the round fails; nobody is credited.
            // The member whose own step departs from the arithmetic (its opened traffic) is failed outright.
            const where = ringAudit.mismatched.length ? `the ring's result differs from the commitments at blocks ${ringAudit.mismatched.join(', ')}` : 'the ring carried bytes that do not follow from the commitments';
            for (const p of [...c.members]) checks.set(p, { ok: false, score: 0, unverified: true, reason: `ring-mismatch: ${where}` });
            for (const x of ringAudit.blamed) {
              checks.set(x.peerId, { ok: false, score: 0, reason: `ring-mismatch: block ${x.block}, step ${x.step}: ${x.reason}` });
            }
            if (!ringAudit.blamed.length) metrics?.trust.failure('ring-mismatch');
          }
          // Scales opened in full that contradict the member's commitment are a proof against it alone.
          for (const f of ringAudit?.scaleFailures ?? []) checks.set(f.peerId, { ok: false, score: 0, reason: f.reason });
          // Ring transcripts: a hop whose two ends report different traffic strikes both (one of them lied).
          const badHops = auditTranscripts(c.ring, reports).filter((h) => !h.ok);
          for (const h of badHops) {
            log.warn('trust.transcript-mismatch', { round: c.round, from: h.from, to: h.to });
            for (const p of [h.from, h.to]) checks.set(p, { ok: false, soft: true, score: 0, reason: `transcript-mismatch: hop ${h.from.slice(0, 8)} → ${h.to.slice(0, 8)} reported different traffic` });
          }
          for (const [peerId, check] of checks) {
            if (check.ok || check.unverified) continue;
            // A proof of cheating excludes at once; a statistical failure (the useful-work check, a missing
            // upload) only on its second within strikeWindow rounds, so that an honest member's unlucky
            // round costs it that round's credit and nothing more.
            const strikes = [...(strikesOf.get(peerId) ?? []).filter((r) => r > c.round - STRIKE_WINDOW), c.round];
            strikesOf.set(peerId, strikes);
            const exclude = !check.soft || strikes.length >= 2;
            metrics?.trust.failure(check.reason);
            if (exclude) {
              planner.exclude(peerId, c.round + 1 + cfg.penaltyRounds);
              metrics?.trust.excluded();
            }
            log.warn('trust.failed', { round: c.round, peerId, reason: check.reason, strikes: strikes.length, excludedUntilRound: exclude ? c.round + 1 + cfg.penaltyRounds : undefined });
            // The verdict lands after the commit, when the next round may already be planned with the member:
            // that attempt is re-planned without it (its members commit again), so its Δ never enters the average.
            if (exclude && planner.round <= c.round + cfg.penaltyRounds && planner.dropFromAttempt(planner.round, planner.runView().planAttempt(), [peerId], `excluded: ${check.reason}`)) {
              log.info('trust.replan-excluded', { round: planner.round, peerId });
            }
          }
          const commitments = new Map<string, SignedRecord>();
          for (const p of c.members) {
            const k = book.get(c.round, p);
            if (k) commitments.set(p, k.record);
          }
          const body = commitBody(c, reports, cfg, checks, commitments, book.refusedIn(c.round));
          await record('commit', {
            ...body,
            ...(badHops.length ? { badHops: badHops.map(({ from, to }) => ({ from, to })) } : {}),
            ...(ringAudit ? { ringAudit } : {}),
          });
        });
      },
    });
    this.#applier = applier;
    const plannerLog = plannerEventSink(log);
    const plans = new Map<string, { ring: string[]; plannedAtMs: number }>();
    let lastCommitHash = state.thetaHash;
    const planner = new RoundPlanner({
      seed: cfg.seed,
      members: () => membership.list(),
      minMembers: cfg.minMembers,
      maxAttempts: cfg.maxAttempts,
      planDelayMs: cfg.planDelayMs,
      roundDeadlineMs: cfg.roundDeadlineMs,
      startRound: state.round + 1,
      committedRound: state.round,
      thetaSha256: state.thetaHash,
      onEvent: (e: PlannerEvent) => {
        plannerLog(e);
        if (e.type === 'replan') metrics?.membership.replan();
        if (e.type === 'abandon') {
          // An abandoned round has no commit entry: its refusals (members failed at commit time) go on record here.
          const failed = [...book.refusedIn(e.round)].map(([peerId, reason]) => ({ peerId, reason }));
          void record('abandon', { round: e.round, attempt: e.attempt, reason: e.reason, failed });
        }
        if (e.type === 'plan' || e.type === 'replan') {
          for (const k of plans.keys()) if (Number(k.split('/')[0]) < e.round) plans.delete(k);
          plans.set(`${e.round}/${e.attempt}`, { ring: e.ring.map((m) => m.peerId), plannedAtMs: Date.now() });
        }
        if (e.type === 'commit') {
          const plan = plans.get(`${e.round}/${e.attempt}`);
          const prevThetaSha256 = lastCommitHash;
          applier.commit({
            round: e.round,
            attempt: e.attempt,
            prevThetaSha256: lastCommitHash,
            thetaSha256: e.thetaSha256,
            members: [...e.verdicts].filter(([, v]) => v === 'committed').map(([p]) => p),
            resync: [...e.verdicts].filter(([, v]) => v === 'resync').map(([p]) => p),
            ring: plan?.ring ?? [...e.verdicts.keys()],
            plannedAtMs: plan?.plannedAtMs ?? Date.now(),
            committedAtMs: Date.now(),
          });
          lastCommitHash = e.thetaSha256;
          if (cfg.compression === 'int8' && cfg.openBlocks > 0 && plan) audit.begin(e.round, e.attempt, plan.ring, e.thetaSha256);
          if (cfg.compression === 'int8') verifier.begin(e.round, [...e.verdicts].filter(([, v]) => v === 'committed').map(([p]) => p), e.thetaSha256, prevThetaSha256);
        }
      },
    });
    this.#planner = planner;
    const numBlocks = Math.ceil(expected / cfg.blockSize);
    const book = new CommitmentBook({
      planner,
      numBlocks,
      numParams: expected,
      blockSize: cfg.blockSize,
      tokensPerRound: cfg.innerSteps * cfg.batchSize * cfg.seqLen,
      normFactor: cfg.normFactor,
      clipFactor: cfg.clipFactor,
      penaltyRounds: cfg.penaltyRounds,
      logger: log,
      onFailed: (_peerId, _round, reason) => {
        metrics?.trust.failure(reason);
        metrics?.trust.excluded();
      },
    });
    let validator: { engine: Engine; loader: DataLoader } | undefined;
    let shards: ShardServer | undefined;
    if (this.#opts.dataDir) {
      const info = datasetInfo(this.#opts.dataDir);
      if (info.manifestHash !== cfg.manifestSha256) {
        throw new RangeError(`--data ${this.#opts.dataDir} has manifest ${info.manifestHash}, but the run's is ${cfg.manifestSha256}`);
      }
      const loader = DataLoader.open(this.#opts.dataDir, { split: 'train' });
      validator = { engine: Engine.create({ model: cfg.model, seed: cfg.seed, threads: 1 }), loader };
      shards = new ShardServer(this.#opts.dataDir, loader.manifest);
      this.#validatorEngine = validator.engine;
    } else if (cfg.compression === 'int8' && !cfg.validators?.length) {
      log.warn('trust.no-data', { reason: 'no --data and no validator members: the useful-work check is off; commitments, norms and replays are still checked' });
    }
    const validators = cfg.validators ?? [];
    const delegation = new CheckDelegation();
    this.#delegation = delegation;
    const asValidator = (peerId: string) => {
      if (!validators.includes(peerId)) throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} does not have the validator role in this run`, 'not-a-validator');
      return peerId;
    };
    const verifier = new RoundVerifier({
      book,
      engine: validator?.engine,
      loader: validator?.loader,
      runSeed: cfg.seed,
      innerSteps: cfg.innerSteps,
      B: cfg.batchSize,
      T: cfg.seqLen,
      shardsPerRound: cfg.shardsPerRound,
      numParams: expected,
      blockSize: cfg.blockSize,
      sample: cfg.verifyMembers,
      every: cfg.verifyEvery,
      batches: cfg.verifyBatches,
      timeoutMs: cfg.verifyTimeoutMs,
      logger: log,
      onCheck: (ok) => metrics?.trust.check(ok),
      validators,
      delegation,
      audits: cfg.validatorAudits ?? 1,
      onDelegated: (outcome) => metrics?.trust.delegated(outcome),
    });
    this.#verifier = verifier;
    const audit = new RingAudit({ book, numParams: expected, blockSize: cfg.blockSize, sample: cfg.openBlocks, timeoutMs: cfg.verifyTimeoutMs, logger: log });
    metrics?.membership.bindRound(() => planner.round);
    metrics?.membership.setMinMembers(cfg.minMembers);

    const server = new SignedServer({
      verifier: new RequestVerifier({ runId: cfg.runId }),
      onRefused: (method, e) => log.warn('request.refused', { method, status: e.status, reason: e.reason, message: e.message }),
      onHandlerError: (method, e) => log.error('handler.error', { method, error: e }),
    });
    const compression = cfg.compression === 'int8' ? 'COMPRESSION_INT8' : 'COMPRESSION_FP32';
    server.addService(coordinatorService(), {
      ...createCoordinatorHandlers(membership, {
        heartbeatIntervalMs: cfg.heartbeatIntervalMs,
        manifestSha256: cfg.manifestSha256,
        runConfigJson: canonicalJson(cfg),
        run: planner.runView(),
        logger: log,
        metrics: metrics?.membership,
        uploadWanted: (peerId) => applier.uploadWantedFrom(peerId),
        checksWaiting: (peerId) => (validators.includes(peerId) ? delegation.waiting(peerId) : 0),
      }),
      ...createRoundHandlers(planner, {
        innerSteps: cfg.innerSteps,
        compression,
        blockSize: cfg.blockSize,
        allreduceTimeoutMs: cfg.allreduceTimeoutMs,
        membership,
        logger: log,
        onReport: (peerId, req, verdict) => {
          applier.recordReport(peerId, req);
          if (verdict !== 'committed' || req.id === null) return {};
          return { uploadUpdate: applier.wantUpload(peerId, req.id.round), uploadDelta: verifier.wantsDelta(peerId, req.id.round), openBlocks: audit.wants(peerId, req.id.round) };
        },
      }),
      fetchState: (req, ctx) => streamState(this.state, req, { signal: ctx.signal }),
      pushUpdate: (req, ctx) => applier.receive(ctx.peer.peerId, req),
      streamLedger: (req) => streamLedger(ledger, req.fromIndex),
      pushScales: (req, ctx) => book.receiveScales(ctx.peer.peerId, req),
      commit: (req, ctx) => book.commit(ctx.peer.peerId, req),
      ...(shards ? { getManifest: () => shards!.manifest(), fetchShard: (req: FetchShardRequest, ctx: { signal: AbortSignal }) => shards!.shard(req.file, ctx.signal) } : {}),
      pushDelta: (req, ctx) => verifier.receive(ctx.peer.peerId, req),
      pushOpenings: (req, ctx) => audit.receive(ctx.peer.peerId, req),
      fetchCheck: (_req, ctx) => delegation.fetch(asValidator(ctx.peer.peerId), ctx.signal),
      submitCheck: (req, ctx) => delegation.submit(asValidator(ctx.peer.peerId), req),
      dataPeers: (_req, ctx) => ({
        manifestSha256: cfg.manifestSha256,
        peers: membership
          .list()
          .filter((m) => m.info.dataServer && m.peerId !== ctx.peer.peerId)
          .map((m) => ({ peerId: m.peerId, address: m.info.dataServer })),
        stateRound: this.state.round,
        stateSha256: statePayload(this.state).sha256,
      }),
    });
    this.#server = server;
    this.#port = await server.listen(this.#opts.listen);

    const sweepMs = Math.max(50, Math.min(1000, Math.floor(cfg.heartbeatTimeoutMs / 4)));
    this.#timers.push(setInterval(() => membership.sweep(), sweepMs));
    this.#timers.push(setInterval(() => planner.tick(), this.#opts.tickMs ?? 250));

    if (this.#metricsServer) {
      await this.#metricsServer.start(); // logs metrics.listen
    }
    this.#ready = true;
    const host = this.#opts.listen.replace(/:\d+$/, '');
    log.info('coordinator.listening', { address: `${host}:${this.#port}`, port: this.#port, round: planner.round, committedRound: planner.committedRound, thetaSha256: planner.thetaSha256 });
  }

  /** Stops the timers and servers and closes the round log; idempotent. */
  stop(graceMs = 5000): Promise<void> {
    this.#stopping ??= (async () => {
      this.#ready = false;
      for (const t of this.#timers) clearInterval(t);
      this.#timers = [];
      await this.#server?.close(graceMs);
      await this.#metricsServer?.stop();
      await this.#roundLog?.close();
      this.#delegation?.close();
      await this.#verifier?.close();
      await this.#ledger?.close();
      this.#validatorEngine?.dispose();
      this.#log.info('coordinator.stop', { round: this.#planner?.round, committedRound: this.#planner?.committedRound, members: this.#membership?.size });
    })();
    return this.#stopping;
  }
}

// The worker: joins the coordinator, holds the committed θ, outer momentum, inner AdamW state and the
// error-feedback residual, and runs rounds: H inner steps on its assigned windows, Δ = θ(r) − θ_local
// compressed with error feedback, the ring all-reduce of the round's plan, the outer Nesterov step, the
// hash report. A failed all-reduce is reported and the re-planned ring tried with the same Δ; a round the
// worker cannot finish is abandoned (θ, the residual and the round go back to the committed ones). State
// is saved atomically after every commit and at stop, so a restarted worker resumes as the same peer.
import * as grpc from '@grpc/grpc-js';
import * as net from 'net';
import * as fs from 'fs';
import * as path from 'path';
import { assignedBatch, assignedStarts } from './assignment';
import { MANIFEST_FILE, ShardEntry } from '../data/manifest';
import { ensureManifest, ShardServer } from '../data/shard-service';
import { ShardSources } from '../data/shard-sources';
import { outerStep, pseudoGradient } from './outer-step';
import { loadWorkerState, makeWorkerState, saveWorkerState, WorkerState } from './worker-state';
import { MemberLedger } from '../ledger/member-copy';
import { CompressedDelta, deltaBlock, deltaLevels, deltaNorm, deltaRoot, encodeDelta } from '../trust/delta-blocks';
import { merklePath } from '../trust/merkle';
import { ringOpenings } from '../trust/ring-openings';
import { applyClip, clipFactor, scaleNormBound, scalesSha256 } from '../trust/scale-bound';
import { HostileKind, hostileKind, randomTokens } from './hostile';
import { DataLoader, datasetInfo } from '../data/loader';
import { MemberValidator } from './member-validator';
import { CovenantError, errorMessage } from '../errors';
import { Logger } from '../log';
import { initWorkerMetrics, WorkerMetrics } from '../metrics';
import { ListenAddress, MetricsServer } from '../metrics/http';
import { AllReduceResult, AllReduceTranscript, CommError, dequantize, Device, Engine, startAllReduce } from '../native';
import { DeltaCompression, engineCompression, hostCompression } from './delta-compression';
import { GlobalState, makeGlobalState } from '../swarm/global-state';
import { SignedClient } from '../swarm/grpc-client';
import { SignedServer } from '../swarm/grpc-server';
import { RequestVerifier } from '../swarm/signed-request';
import { loadOrCreateIdentity, Identity } from '../swarm/identity';
import { CollectiveId, CommitRequest, coordinatorService, dataPeerService, FetchShardRequest, FetchStateRequest, SCALES_CHUNK_BLOCKS, CoordinatorMethods, ReportRoundRequest, RoundPlan, RoundVerdict, WorkerPhase } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { parseRunConfig, RunConfig } from '../swarm/run-config';
import { newSealingKey, openSecret, secretContext } from '../swarm/sealed-secret';
import { fetchState, streamState } from '../swarm/state-stream';
import { isTransient, pushChunks, pushUpdate, sleep, StoppedError, withRetry } from '../swarm/worker-rpc';

export const WORKER_AGENT = 'covenant/0.1.0';

export interface WorkerOptions {
  /** The coordinator's 'host:port'. */
  coordinator: string;
  /** The run this worker joins; requests for another are refused by the coordinator. */
  runId: string;
  dataDir: string;
  stateDir: string;
  /** Where the all-reduce listens, 'host:port' (port 0: a free port picked at start). */
  listen: string;
  /** The address peers connect to (default: listen; required when listen's host is a wildcard). */
  advertise?: string;
  threads?: number;
  /** Serve the shards this worker holds to other members (DataPeer) on this 'host:port' (port 0: a free one). */
  serveData?: string;
  /** Where the engine trains (default 'cpu'); on 'cuda' an int8 run also keeps Δ and its compression on the GPU. */
  device?: Device;
  metrics?: ListenAddress;
  logger: Logger;
  /** Stop (exit the loop) after this many committed rounds of this worker. */
  maxRounds?: number;
  /** Val loss every N committed rounds (0: never; default 1). */
  evalEvery?: number;
  /** Val batches per evaluation (default 8). */
  evalBatches?: number;
  /** Progress for a terminal view (the demo) or a test. */
  onEvent?: (e: WorkerEvent) => void;
}

export type WorkerEvent =
  | { type: 'joined'; peerId: string; round: number; address: string }
  | { type: 'phase'; phase: WorkerPhaseName; round: number; innerStep: number; loss?: number; tokensPerSecond?: number }
  | {
      type: 'commit';
      round: number;
      attempt: number;
      members: number;
      meanLoss: number;
      valLoss?: number;
      seconds: number;
      bytesSent: number;
      /** What an fp32 ring all-reduce of the same Δ would have sent from this worker. */
      fp32Bytes: number;
      thetaSha256: string;
    }
  | { type: 'resync'; round: number; thetaSha256: string }
  | { type: 'stopped'; reason: string };

export type WorkerPhaseName = 'idle' | 'syncing' | 'inner' | 'allreduce' | 'outer';
const PHASES: Record<WorkerPhaseName, WorkerPhase> = {
  idle: 'WORKER_PHASE_IDLE',
  syncing: 'WORKER_PHASE_SYNCING',
  inner: 'WORKER_PHASE_INNER',
  allreduce: 'WORKER_PHASE_ALLREDUCE',
  outer: 'WORKER_PHASE_OUTER',
};

/** The coordinator's answer to a round report. */
type ReportAnswer = { verdict: RoundVerdict; committedRound: number; uploadUpdate: boolean; uploadDelta: boolean; openBlocks: number[] };

/** A round the worker cannot finish: it restores the committed state and asks for the next plan. */
class RoundAbandoned extends Error {}

/** Thrown out of start() for what a restart cannot fix (wrong run, wrong data): exit 2 in the CLI. */
export class WorkerConfigError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('WORKER_CONFIG', message, options);
  }
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function splitHostPort(name: string, s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) > 65535) throw new WorkerConfigError(`${name} ${JSON.stringify(s)} is not 'host:port' (IPv6 as '[addr]:port')`);
  return { host: m[1], port: Number(m[2]) };
}

const joinHostPort = (host: string, port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

export class Worker {
  readonly #o: WorkerOptions;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #stopReason = '';
  #identity!: Identity;
  #client!: SignedClient<CoordinatorMethods>;
  #cfg!: RunConfig;
  #engine!: Engine;
  #compressor!: DeltaCompression;
  #train!: DataLoader;
  #val: DataLoader | undefined;
  #manifest = '';
  #listen = '';
  #advertise = '';
  #metrics: WorkerMetrics | undefined;
  #metricsServer: MetricsServer | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #ready = false;
  /** The committed state this worker holds. */
  #round = 0;
  #theta!: Float32Array;
  #momentum!: Float32Array;
  #thetaHash = '';
  /** The last committed round's averaged Δ, kept for an upload the coordinator may ask for. */
  #lastUpdate: { id: CollectiveId; avg: Float32Array } | undefined;
  #uploading: Promise<void> | undefined;
  #ledger: MemberLedger | undefined;
  #deltaUpload: Promise<unknown> = Promise.resolve();
  #openingsPush: Promise<unknown> = Promise.resolve();
  #hostile: HostileKind | undefined;
  /** Data peers, then the coordinator: where missing shards come from. */
  #sources!: ShardSources;
  /** The DataPeer server (--serve-data) and the address other members reach it at. */
  #dataServer: SignedServer | undefined;
  #dataServerAddress = '';
  #served: GlobalState | undefined;
  /** Set when the run gives this member the validator role. */
  #validator: MemberValidator | undefined;
  /** The data directory started without its shards: fetch what each round needs. */
  #fetchData = false;
  /** hostile 'replay': the first round's compressed Δ, sent again every round. */
  #replayed: CompressedDelta | undefined;
  #saved: WorkerState | undefined;
  /** Set by a heartbeat re-join that found this worker's state stale; the loop resyncs before its next plan. */
  #resyncWanted: { round: number; thetaSha256: string } | undefined;
  #ledgerSync: Promise<unknown> = Promise.resolve();
  #phase: WorkerPhaseName = 'idle';
  #workRound = 0;
  #innerStep = 0;
  #committedRounds = 0;
  #allreduceAbort: (() => void) | undefined;
  /** Per-process X25519 key the round secrets are sealed to. */
  readonly #sealing = newSealingKey();
  #allreduceAttempt = 0;
  #running: Promise<void> | undefined;
  #shuttingDown: Promise<void> | undefined;

  constructor(opts: WorkerOptions) {
    this.#o = opts;
    this.#log = opts.logger.child({ role: 'worker' });
  }

  get peerId(): string {
    return this.#identity.peerId;
  }
  /** The committed round whose θ this worker holds. */
  get round(): number {
    return this.#round;
  }
  get thetaSha256(): string {
    return this.#thetaHash;
  }
  get dataAddress(): string {
    return this.#advertise;
  }
  get metricsAddress(): ListenAddress | undefined {
    return this.#metricsServer?.address();
  }

  /** Sets everything up and joins; then run() does the rounds. */
  async start(): Promise<void> {
    const o = this.#o;
    this.#identity = loadOrCreateIdentity(o.stateDir);
    this.#client = new SignedClient(coordinatorService(), { address: o.coordinator, identity: this.#identity, runId: o.runId });
    this.#sources = new ShardSources({ coordinator: this.#client, identity: this.#identity, runId: o.runId, logger: this.#log, onPeerFailure: () => this.#metrics?.data.peerFailures.inc() });
    // A data directory without its manifest is filled from the coordinator or data peers, shard by shard, as
    // rounds need them.
    if (!fs.existsSync(path.join(o.dataDir, MANIFEST_FILE))) {
      this.#fetchData = true;
      const signal = this.#stop.signal;
      await withRetry(() => ensureManifest(this.#client, o.dataDir), { signal })
        .then(() => this.#log.info('data.manifest', { dir: o.dataDir, from: o.coordinator }))
        .catch(async (e) => {
          if (!(e instanceof RpcError && e.status === grpc.status.UNIMPLEMENTED)) throw e;
          // The coordinator runs without --data: a data peer's copy, checked against the run's manifest hash.
          await withRetry(() => this.#sources.manifestFromPeers(o.dataDir, signal), {
            signal,
            onRetry: (err, n) => n % 5 === 1 && this.#log.warn('data.manifest-wait', { error: errorMessage(err), note: 'the coordinator serves no data; waiting for a data peer (covenant worker --serve-data)' }),
          });
        });
    }
    const info = datasetInfo(o.dataDir);
    this.#manifest = info.manifestHash;
    try {
      this.#hostile = hostileKind();
    } catch (e) {
      throw new WorkerConfigError(errorMessage(e));
    }
    if (this.#hostile) this.#log.warn('worker.hostile', { kind: this.#hostile, note: 'test-only misbehaviour switched on (COVENANT_TEST_HOSTILE)' });
    this.#train = DataLoader.open(o.dataDir, { split: 'train', partial: this.#fetchData });
    try {
      this.#val = DataLoader.open(o.dataDir, { split: 'val', partial: this.#fetchData });
    } catch {
      this.#val = undefined;
    }
    if (o.serveData) await this.#serveData(o.serveData);
    const l = splitHostPort('--listen', o.listen);
    const port = l.port === 0 ? await freePort(l.host) : l.port;
    this.#listen = joinHostPort(l.host, port);
    if (o.advertise) {
      splitHostPort('--advertise', o.advertise);
      this.#advertise = o.advertise;
    } else if (l.host === '0.0.0.0' || l.host === '::') {
      throw new WorkerConfigError(`--listen ${o.listen} binds every interface; give --advertise HOST:PORT, the address peers reach this worker at`);
    } else {
      this.#advertise = this.#listen;
    }
    if (o.metrics) {
      this.#metrics = initWorkerMetrics();
      this.#metricsServer = new MetricsServer({
        registry: this.#metrics.registry,
        host: o.metrics.host,
        port: o.metrics.port,
        readiness: () => (this.#ready ? true : { ok: false, reason: this.#phase === 'syncing' ? 'syncing state' : 'joining' }),
        log: this.#log,
      });
      await this.#metricsServer.start();
    }
    this.#log.info('worker.start', { peerId: this.#identity.peerId, coordinator: o.coordinator, listen: this.#listen, advertise: this.#advertise, data: o.dataDir, manifestSha256: this.#manifest });
    try {
      this.#saved = await loadWorkerState(o.stateDir, { runId: o.runId });
    } catch (e) {
      throw new WorkerConfigError(`${errorMessage(e)}`, { cause: e });
    }
    if (this.#saved) {
      // Announce the state this worker holds, so an up-to-date worker is not sent to fetch it again.
      this.#round = this.#saved.round;
      this.#thetaHash = this.#saved.thetaSha256;
    }
    await this.#join(true);
    this.#ledger = await MemberLedger.open(o.stateDir, this.#identity.peerId);
    this.#syncLedger();
    this.#heartbeat = setInterval(() => void this.#beat(), this.#cfg.heartbeatIntervalMs);
    this.#heartbeat.unref();
  }

  /** Runs rounds until stop() or maxRounds; resolves once the state is saved and the worker has left. */
  run(): Promise<void> {
    this.#running ??= this.#loop();
    return this.#running;
  }

  /** Graceful stop: abandons the round in flight (the committed state is what is saved), leaves, saves. */
  async stop(reason = 'stop'): Promise<void> {
    if (!this.#stop.signal.aborted) {
      this.#stopReason = reason;
      this.#log.info('worker.stopping', { reason, round: this.#workRound, phase: this.#phase });
      this.#stop.abort();
      this.#allreduceAbort?.();
    }
    await this.#running?.catch(() => undefined);
    this.#shuttingDown ??= this.#shutdown();
    await this.#shuttingDown;
  }

  // ---------------------------------------------------------------------------------------------------

  async #loop(): Promise<void> {
    const signal = this.#stop.signal;
    try {
      while (!signal.aborted) {
        if (this.#o.maxRounds !== undefined && this.#committedRounds >= this.#o.maxRounds) {
          this.#stopReason = `${this.#o.maxRounds} rounds done`;
          break;
        }
        try {
          await this.#oneRound();
        } catch (e) {
          if (e instanceof StoppedError || signal.aborted) break;
          if (e instanceof RoundAbandoned) continue;
          if (e instanceof RpcError && e.reason === 'unknown-peer') {
            await this.#join(false);
            continue;
          }
          if (isTransient(e) || e instanceof RpcError) {
            this.#log.warn('round.error', { round: this.#workRound, error: errorMessage(e) });
            await sleep(500, signal).catch(() => undefined);
            continue;
          }
          throw e;
        }
      }
    } finally {
      this.#setPhase('idle');
    }
  }

  async #shutdown(): Promise<void> {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    if (!this.#client) return;
    this.#ready = false;
    // Background transfers get a bounded while to finish: the whole stop must fit GRACEFUL_STOP_SECONDS.
    const within = (p: Promise<unknown> | undefined, ms: number) => Promise.race([p?.catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())]);
    await within(this.#uploading, 20_000);
    await within(this.#deltaUpload, 10_000);
    await within(this.#openingsPush, 5_000);
    await within(this.#ledgerSync, 5_000);
    await within(this.#validator?.close(), 10_000);
    await within(this.#dataServer?.close(2000), 3_000);
    this.#sources?.close();
    if (this.#engine && !this.#engine.disposed) {
      await this.#save().catch((e) => this.#log.error('state.save-failed', { error: errorMessage(e) }));
      if (this.#stopReason !== '') {
        await this.#client.call('leave', { reason: this.#stopReason }, { deadlineMs: 10_000 }).catch((e) => this.#log.warn('worker.leave-failed', { error: errorMessage(e) }));
      }
      this.#engine.dispose();
    }
    await this.#metricsServer?.stop();
    this.#client.close();
    this.#o.onEvent?.({ type: 'stopped', reason: this.#stopReason || 'stop' });
    this.#log.info('worker.stop', { reason: this.#stopReason, round: this.#round, thetaSha256: this.#thetaHash });
  }

  /** Join (first time: also loads the saved state and builds the engine), then syncs when told to. */
  async #join(first: boolean): Promise<void> {
    const signal = this.#stop.signal;
    const res = await withRetry(
      () =>
        this.#client.call('join', {
          dataAddress: this.#advertise,
          agent: WORKER_AGENT,
          manifestSha256: this.#manifest,
          stateRound: this.#round,
          thetaSha256: this.#thetaHash,
          device: this.#o.device ?? 'cpu',
          dataServer: this.#dataServerAddress,
        }),
      { signal, onRetry: (e, n, ms) => this.#log.warn('worker.join-retry', { attempt: n, delayMs: ms, error: errorMessage(e) }) },
    ).catch((e) => {
      if (e instanceof RpcError && (e.status === grpc.status.FAILED_PRECONDITION || e.status === grpc.status.PERMISSION_DENIED)) {
        throw new WorkerConfigError(`the coordinator refused to admit this worker: ${e.details}`, { cause: e });
      }
      throw e;
    });
    if (first) await this.#setup(res.runConfigJson);
    this.#metrics?.membership.join();
    this.#log.info('worker.join', { peerId: res.peerId, round: res.round, committedRound: res.committedRound, needsState: res.needsState, stateRound: this.#round });
    this.#o.onEvent?.({ type: 'joined', peerId: res.peerId, round: res.round, address: this.#advertise });
    const behind = res.committedRound > 0 && (res.committedRound !== this.#round || res.thetaSha256 !== this.#thetaHash);
    if (res.needsState || behind) await this.#resync(res.committedRound, res.thetaSha256, 'behind');
    else if (res.committedRound === 0 && res.thetaSha256 !== '' && res.thetaSha256 !== this.#thetaHash) await this.#resync(0, res.thetaSha256, 'hash_mismatch');
    this.#ready = true;
  }

  async #setup(runConfigJson: string): Promise<void> {
    const o = this.#o;
    let cfg: RunConfig;
    try {
      cfg = parseRunConfig(JSON.parse(runConfigJson), 'the coordinator\'s run config');
    } catch (e) {
      throw new WorkerConfigError(`the coordinator sent a run config this worker cannot use: ${errorMessage(e)}`, { cause: e });
    }
    if (cfg.manifestSha256 !== this.#manifest) throw new WorkerConfigError(`data ${o.dataDir} has manifest ${this.#manifest} but the run needs ${cfg.manifestSha256}`);
    if (cfg.model.vocabSize < this.#train.vocabSize) {
      throw new WorkerConfigError(`the run's model has vocabulary ${cfg.model.vocabSize} but data ${o.dataDir} uses ${this.#train.vocabSize} token ids`);
    }
    this.#cfg = cfg;
    try {
      this.#engine = Engine.create({ model: cfg.model, seed: cfg.seed, threads: o.threads, device: o.device ?? 'cpu' });
    } catch (e) {
      if (e instanceof CovenantError && e.code === 'DEVICE_UNAVAILABLE') throw new WorkerConfigError(`--device ${o.device}: ${e.message}`, { cause: e });
      throw e;
    }
    const n = this.#engine.numParams;
    // On a GPU (and with no hostile switch to apply on the host) Δ never leaves the device.
    this.#compressor = this.#engine.device === 'cuda' && cfg.compression === 'int8' && !this.#hostile ? engineCompression(this.#engine, cfg.blockSize) : hostCompression(this.#engine, cfg.blockSize);
    this.#log.info('worker.engine', { device: this.#engine.device, params: n, deltaCompression: this.#compressor.where });
    const saved = this.#saved;
    this.#saved = undefined;
    if (saved && saved.theta.length !== n) {
      throw new WorkerConfigError(`worker state in ${o.stateDir} holds ${saved.theta.length} parameters but the run's model has ${n}; use another --state directory for this run`);
    }
    if (saved) {
      this.#engine.loadParams(saved.theta);
      this.#engine.loadOptimizerState(saved.adamM, saved.adamV, saved.adamStep);
      this.#compressor.loadResidual(saved.residual);
      this.#momentum = Float32Array.from(saved.momentum);
      this.#round = saved.round;
      this.#log.info('state.load', { round: saved.round, thetaSha256: saved.thetaSha256, adamStep: saved.adamStep });
    } else {
      this.#momentum = new Float32Array(n);
      this.#round = 0;
    }
    this.#theta = Float32Array.from(this.#engine.params());
    this.#thetaHash = this.#engine.paramsHash();
    this.#metrics?.training.startRound(cfg.innerSteps);
    if (cfg.validators?.includes(this.peerId)) {
      this.#validator = new MemberValidator({
        client: this.#client,
        cfg,
        loader: this.#train,
        ensureWindows: (starts) => this.#ensureWindows(starts),
        logger: this.#log,
        signal: this.#stop.signal,
        lie: this.#hostile === 'lying-validator',
        onCheck: (result) => this.#metrics?.data.validatorChecks.inc({ result }),
      });
      this.#log.info('validator.role', { peerId: this.peerId, note: 'this member runs useful-work checks of others the coordinator assigns it' });
    }
  }

  /** Fetches the committed state (retrying while the coordinator has not saved it yet) and adopts it. */
  async #resync(minRound: number, expectHash: string, reason: 'behind' | 'hash_mismatch'): Promise<void> {
    const signal = this.#stop.signal;
    this.#setPhase('syncing');
    const started = Date.now();
    // A data peer's copy first, when its payload is exactly the coordinator's saved one; else the coordinator.
    const peer = await this.#sources.stateFromPeers(minRound, signal).catch(() => undefined);
    const fromPeer = peer && (expectHash === '' || peer.state.thetaHash === expectHash) ? peer : undefined;
    const state: GlobalState = fromPeer?.state ?? await withRetry(
      async () => {
        const s = await fetchState(this.#client, { minRound, signal });
        if (expectHash !== '' && s.thetaHash !== expectHash) {
          throw new RpcError(grpc.status.UNAVAILABLE, `the coordinator serves θ ${s.thetaHash} of round ${s.round}, not yet the committed ${expectHash}`, 'state-not-saved');
        }
        return s;
      },
      {
        signal,
        retryable: (e) => isTransient(e) || (e instanceof RpcError && e.reason === 'state-too-old'),
        onRetry: (e, n) => n % 5 === 1 && this.#log.info('state.fetch-wait', { minRound, error: errorMessage(e) }),
      },
    );
    if (state.theta.length !== this.#theta.length) throw new WorkerConfigError(`the coordinator's state has ${state.theta.length} parameters, the run's model ${this.#theta.length}`);
    this.#engine.loadParams(state.theta);
    this.#theta = Float32Array.from(state.theta);
    this.#momentum = Float32Array.from(state.momentum);
    this.#round = state.round;
    this.#thetaHash = state.thetaHash;
    this.#compressor.reset(); // the residual belonged to Δs of a history this worker no longer follows
    this.#lastUpdate = undefined;
    this.#metrics?.membership.resync(reason);
    await this.#save();
    this.#metrics?.data.stateFetches.inc({ source: fromPeer ? 'peer' : 'coordinator' });
    this.#log.info('state.resync', { round: state.round, thetaSha256: state.thetaHash, reason, from: fromPeer?.from ?? 'coordinator', seconds: (Date.now() - started) / 1000 });
    this.#o.onEvent?.({ type: 'resync', round: state.round, thetaSha256: state.thetaHash });
  }

  async #save(): Promise<void> {
    await saveWorkerState(
      this.#o.stateDir,
      makeWorkerState({
        runId: this.#o.runId,
        round: this.#round,
        theta: this.#theta,
        momentum: this.#momentum,
        adamM: Float32Array.from(this.#engine.adamM()),
        adamV: Float32Array.from(this.#engine.adamV()),
        adamStep: this.#engine.optimizerStep,
        residual: this.#compressor.residual(),
      }),
    );
  }

  #setPhase(phase: WorkerPhaseName, extra: { loss?: number; tokensPerSecond?: number } = {}): void {
    this.#phase = phase;
    this.#o.onEvent?.({ type: 'phase', phase, round: this.#workRound, innerStep: this.#innerStep, ...extra });
  }

  async #beat(): Promise<void> {
    if (this.#stop.signal.aborted) return;
    try {
      const res = await this.#client.call('heartbeat', { round: this.#workRound, phase: PHASES[this.#phase], innerStep: this.#innerStep }, { deadlineMs: 5000 });
      if (this.#allreduceAbort && res.round === this.#workRound && res.planAttempt > this.#allreduceAttempt) {
        // The ring was re-planned while this member still waits in the old one: give it up now.
        this.#log.info('allreduce.superseded', { round: res.round, attempt: this.#allreduceAttempt, planAttempt: res.planAttempt });
        this.#allreduceAbort();
      }
      if (res.action === 'HEARTBEAT_ACTION_REJOIN' && this.#phase !== 'syncing') {
        const j = await this.#client.call('join', { dataAddress: this.#advertise, agent: WORKER_AGENT, manifestSha256: this.#manifest, stateRound: this.#round, thetaSha256: this.#thetaHash, device: this.#o.device ?? 'cpu', dataServer: this.#dataServerAddress });
        if (j.needsState) this.#resyncWanted = { round: j.committedRound, thetaSha256: j.thetaSha256 };
        this.#log.info('worker.rejoin', { round: this.#round, needsState: j.needsState });
      } else if (res.action === 'HEARTBEAT_ACTION_UPLOAD') {
        const u = this.#lastUpdate;
        if (u && u.id.round === res.uploadRound) this.#upload(u.id, u.avg);
      }
      this.#validator?.poke(res.checksWaiting);
    } catch (e) {
      this.#log.debug('heartbeat.failed', { error: errorMessage(e) });
    }
  }

  /**
   * Commits to this member's Δ for the plan's attempt and waits until every member has (GO). 'replan': the
   * attempt changed, get the new plan. A refusal abandons the round; members that never commit make this
   * member report the all-reduce as failed in phase 'commit', naming one of them.
   */
  /** Commits and waits for the attempt's GO; returns its clip bound, or 'replan'. */
  async #commitAndWait(plan: RoundPlan & { id: CollectiveId }, c: Omit<CommitRequest, 'meta' | 'id'>): Promise<{ clipNorm: number } | 'replan'> {
    const signal = this.#stop.signal;
    const deadline = Date.now() + (plan.allreduceTimeoutMs || this.#cfg.allreduceTimeoutMs);
    for (;;) {
      const r = await withRetry(() => this.#client.call('commit', { id: plan.id, ...c }), { signal });
      if (r.status === 'COMMIT_STATUS_GO') return { clipNorm: r.clipNorm };
      if (r.status === 'COMMIT_STATUS_REPLAN') return 'replan';
      if (r.status === 'COMMIT_STATUS_REFUSED') {
        this.#log.warn('trust.refused', { round: plan.id.round, attempt: plan.id.attempt, reason: r.reason });
        throw new RoundAbandoned();
      }
      if (Date.now() > deadline) {
        const rank = r.missingRanks[0] ?? -1;
        this.#log.warn('commit.timeout', { round: plan.id.round, attempt: plan.id.attempt, missingRanks: r.missingRanks });
        const v = await this.#report(plan, {
          outcome: 'ROUND_OUTCOME_ALLREDUCE_FAILED',
          failure: { code: 'COMM_TIMEOUT', phase: 'commit', peerRank: rank, message: `ranks ${r.missingRanks.join(', ')} did not commit within the timeout` },
        });
        if (v.verdict === 'ROUND_VERDICT_RESYNC') throw new RoundAbandoned();
        return 'replan';
      }
      await sleep(Math.max(20, Math.min(r.retryAfterMs || 100, 500)), signal);
    }
  }

  /** Opens the asked blocks of the committed Δ, and what this member sent of them in the ring (its transcript). */
  #pushOpenings(plan: RoundPlan & { id: CollectiveId }, d: CompressedDelta, blocks: number[], transcript: AllReduceTranscript | undefined): void {
    const id = plan.id;
    const levels = deltaLevels(d);
    const openings = blocks.filter((i) => i < d.scales.length).map((index) => ({ index, block: deltaBlock(d, index), path: merklePath(levels, index) }));
    const ringOpened = transcript && plan.ring.length > 1 ? ringOpenings(transcript, plan.ring.length, plan.rank, d.block, blocks) : [];
    // Payload bytes (blocks and paths), for the trust bench's count of what verification moves.
    const bytes = [...openings, ...ringOpened].reduce((a, o) => a + o.block.length + 32 * o.path.length, 0);
    this.#openingsPush = this.#client
      .call('pushOpenings', { id, openings, ringOpenings: ringOpened }, { signal: this.#stop.signal })
      .then(() => this.#log.info('trust.openings', { round: id.round, blocks: openings.length, ringOpenings: ringOpened.length, bytes }))
      .catch((e) => this.#log.warn('trust.openings-failed', { round: id.round, error: errorMessage(e) }));
  }

  #uploadDelta(id: CollectiveId, d: CompressedDelta): void {
    const payload = encodeDelta(d);
    this.#deltaUpload = pushChunks(this.#client, 'pushDelta', id, payload, this.#stop.signal)
      .then(() => this.#log.info('trust.delta-upload', { round: id.round, bytes: payload.length }))
      .catch((e) => this.#log.warn('trust.delta-upload-failed', { round: id.round, error: errorMessage(e) }));
  }

  /** Refreshes this member's copy of its ledger entries in the background. */
  #syncLedger(): void {
    const l = this.#ledger;
    if (!l) return;
    this.#ledgerSync = l
      .sync(this.#client)
      .then((n) => n > 0 && this.#log.info('ledger.sync', { kept: n, entries: l.entries.length }))
      .catch((e) => this.#log.warn('ledger.sync-failed', { error: errorMessage(e) }));
  }

  #upload(id: CollectiveId, avg: Float32Array): void {
    if (this.#uploading) return;
    this.#uploading = pushUpdate(this.#client, id, avg, this.#stop.signal)
      .then((stateRound) => this.#log.info('state.upload', { round: id.round, stateRound }))
      .catch((e) => this.#log.warn('state.upload-failed', { round: id.round, error: errorMessage(e) }))
      .finally(() => {
        this.#uploading = undefined;
      });
  }

  /** GetPlan until READY for a round this worker can run. */
  async #plan(): Promise<RoundPlan & { id: CollectiveId }> {
    const signal = this.#stop.signal;
    const wanted = this.#resyncWanted;
    this.#resyncWanted = undefined;
    if (wanted && wanted.thetaSha256 !== this.#thetaHash) await this.#resync(wanted.round, wanted.thetaSha256, 'behind');
    let sittingOut = -1;
    for (;;) {
      const p = await withRetry(() => this.#client.call('getPlan', { round: 0, x25519PublicKey: this.#sealing.publicKey }), { signal });
      const round = p.id?.round ?? 0;
      this.#workRound = round;
      if (p.status === 'PLAN_STATUS_READY' && p.id) {
        if (p.thetaSha256 !== this.#thetaHash) {
          await this.#resync(0, p.thetaSha256, 'behind');
          if (p.thetaSha256 !== this.#thetaHash) throw new RoundAbandoned();
        }
        if (!p.sealedSecret) throw new RpcError(grpc.status.INTERNAL, 'the coordinator sent the all-reduce secret unsealed although this worker sent a key', 'secret-not-sealed');
        let secret: Buffer;
        try {
          secret = openSecret(p.sealedSecret, this.#sealing, secretContext(this.#o.runId, p.id.round, p.id.attempt, this.peerId));
        } catch (e) {
          throw new RpcError(grpc.status.UNAVAILABLE, errorMessage(e), 'secret-unopenable');
        }
        return { ...p, allreduceSecret: secret } as RoundPlan & { id: CollectiveId };
      }
      if (p.status === 'PLAN_STATUS_NOT_MEMBER' && sittingOut !== round) {
        sittingOut = round;
        this.#log.info('round.sit-out', { round });
      }
      this.#setPhase('idle');
      await sleep(p.status === 'PLAN_STATUS_PENDING' ? Math.max(50, Math.min(p.retryAfterMs || 250, 1000)) : 250, signal);
    }
  }

  async #oneRound(): Promise<void> {
    const signal = this.#stop.signal;
    const cfg = this.#cfg;
    let plan = await this.#plan();
    const round = plan.id.round;
    this.#workRound = round;
    const t0 = Date.now();
    const n = this.#theta.length;
    const B = cfg.batchSize;
    const T = cfg.seqLen;

    // Inner steps on this member's windows of the round.
    this.#metrics?.training.startRound(cfg.innerSteps);
    this.#log.info('round.start', { round, attempt: plan.id.attempt, members: plan.ring.length, rank: plan.rank });
    this.#validator?.remember(this.#thetaHash, this.#theta); // θ(round − 1): what this round's checks start from
    this.#syncLedger();
    await this.#ensureShards(round);
    this.#innerStep = 0;
    this.#compressor.begin(this.#theta); // the engine holds θ(round − 1) now
    this.#setPhase('inner');
    let lossSum = 0;
    for (let s = 0; s < cfg.innerSteps; s++) {
      if (signal.aborted) return this.#abandon(plan, 'stopping');
      const batch = this.#hostile === 'random-tokens' ? randomTokens(B, T, this.#train.vocabSize) : assignedBatch(this.#train, cfg.seed, round, this.peerId, s, B, T, cfg.shardsPerRound);
      const st = Date.now();
      const r = await this.#engine.step(batch, B, T, { lr: cfg.innerLr, weightDecay: cfg.innerWeightDecay, gradClip: cfg.innerGradClip });
      const seconds = (Date.now() - st) / 1000;
      lossSum += r.loss;
      this.#innerStep = s + 1;
      this.#metrics?.training.observeStep({ loss: r.loss, tokens: B * T, seconds, lr: cfg.innerLr, gradNorm: r.gradNorm });
      this.#setPhase('inner', { loss: r.loss, tokensPerSecond: seconds > 0 ? (B * T) / seconds : undefined });
      if (!Number.isFinite(r.loss)) return this.#abandon(plan, `inner loss is ${r.loss} at step ${s}`);
    }
    const innerSeconds = (Date.now() - t0) / 1000;
    const meanLoss = lossSum / cfg.innerSteps;

    // Δ with error feedback; the all-reduce works on a copy so a failed attempt can be retried.
    const bend = (delta: Float32Array) => {
      if (this.#hostile === 'zero') delta.fill(0);
      if (this.#hostile === 'scaled') for (let i = 0; i < delta.length; i++) delta[i] *= 25;
      if (this.#hostile === 'inflated' || this.#hostile === 'scale-lie') for (let i = 0; i < delta.length; i++) delta[i] *= 4;
    };
    let send: Float32Array;
    let compressed: CompressedDelta | undefined;
    if (cfg.compression === 'int8') {
      const q = await this.#compressor.compress(bend);
      compressed = { codes: q.codes, scales: q.scales, block: cfg.blockSize };
      if (this.#hostile === 'replay') compressed = this.#replayed ??= compressed;
      send = await dequantize(compressed.codes, compressed.scales, cfg.blockSize);
      if (this.#hostile === 'ring-mismatch') for (let i = 0; i < send.length; i++) send[i] *= 1.5; // not what it committed to
    } else {
      send = pseudoGradient(this.#theta, this.#engine.params());
      bend(send);
    }
    // Until the round commits, any way out puts the committed θ and the residual from before the round back
    // (once: a resync on the way out replaces both, and must not be undone).
    let restored = false;
    const restore = () => {
      if (restored) return;
      restored = true;
      this.#compressor.undo();
      this.#engine.loadParams(this.#theta);
    };
    const commitment = compressed && {
      merkleRoot: deltaRoot(compressed),
      deltaNorm: deltaNorm(compressed),
      tokens: cfg.innerSteps * B * T,
      meanLoss,
      numBlocks: compressed.scales.length,
      scalesSha256: scalesSha256(compressed.scales),
      scaleNorm: scaleNormBound(compressed.scales, n, cfg.blockSize),
    };
    if (commitment && this.#hostile === 'scale-lie') {
      commitment.scaleNorm /= 4;
      commitment.deltaNorm /= 4;
    }

    // All-reduce by the plan; on failure report it and follow the re-plan.
    this.#setPhase('allreduce');
    const ta = Date.now();
    let avg!: Float32Array;
    let result!: AllReduceResult;
    let theta!: Float32Array;
    let momentum!: Float32Array;
    let hash!: string;
    let v!: ReportAnswer;
    try {
      for (;;) {
        let clip = 1;
        if (commitment) {
          const scales = Buffer.from(compressed!.scales.buffer, compressed!.scales.byteOffset, compressed!.scales.byteLength);
          await withRetry(async () => {
            for (let offset = 0; offset < compressed!.scales.length; offset += SCALES_CHUNK_BLOCKS) {
              const chunk = scales.subarray(4 * offset, 4 * Math.min(compressed!.scales.length, offset + SCALES_CHUNK_BLOCKS));
              const r = await this.#client.call('pushScales', { id: plan.id, scales: chunk, offset });
              if (!r.accepted) return; // a stale attempt: its Commit answers REPLAN
            }
          }, { signal });
          this.#log.info('trust.scales', { round, attempt: plan.id.attempt, bytes: scales.length });
          const go = await this.#commitAndWait(plan, commitment);
          if (go === 'replan') {
            const next = await this.#plan();
            if (next.id.round !== round) throw new RoundAbandoned();
            plan = next;
            continue;
          }
          clip = clipFactor(commitment.scaleNorm, go.clipNorm);
          if (clip < 1) this.#log.info('trust.clipped', { round, attempt: plan.id.attempt, factor: clip, clipNorm: go.clipNorm, scaleNorm: commitment.scaleNorm });
        }
        avg = applyClip(Float32Array.from(send), clip);
        this.#log.info('allreduce.start', { round, attempt: plan.id.attempt, rank: plan.rank, ranks: plan.ring.length, mode: cfg.compression });
        const handle = startAllReduce({
          rank: plan.rank,
          peers: plan.ring.map((m) => m.address),
          listen: this.#listen,
          tensor: avg,
          mode: cfg.compression,
          blockSize: cfg.blockSize,
          timeoutMs: plan.allreduceTimeoutMs || cfg.allreduceTimeoutMs,
          collectiveId: plan.id,
          secret: plan.allreduceSecret,
          transcripts: true,
        });
        this.#allreduceAbort = handle.abort;
        this.#allreduceAttempt = plan.id.attempt;
        try {
          result = await handle.promise;
          break;
        } catch (e) {
          this.#allreduceAbort = undefined;
          if (signal.aborted) {
            restore();
            return this.#abandon(plan, 'stopping');
          }
          const ce = e instanceof CommError ? e : undefined;
          const reason = this.#metrics?.allreduce.failure(e);
          this.#log.warn('allreduce.failed', { round, attempt: plan.id.attempt, code: ce?.code, phase: ce?.phase, peerRank: ce?.peerRank, reason, error: errorMessage(e) });
          const failed = await this.#report(plan, {
            outcome: 'ROUND_OUTCOME_ALLREDUCE_FAILED',
            failure: { code: ce?.code ?? 'COMM_IO', phase: ce?.phase ?? '', peerRank: ce?.peerRank ?? -1, message: errorMessage(e) },
          });
          if (failed.verdict === 'ROUND_VERDICT_RESYNC') {
            restore();
            await this.#resync(failed.committedRound, '', 'hash_mismatch');
            throw new RoundAbandoned();
          }
          const next = await this.#plan();
          if (next.id.round !== round) {
            this.#log.info('round.dropped', { round, reason: 'the coordinator moved on without this member' });
            throw new RoundAbandoned();
          }
          plan = next;
          this.#metrics?.membership.replan();
          this.#log.info('round.replan', { round, attempt: plan.id.attempt, ring: plan.ring.length, rank: plan.rank });
        } finally {
          this.#allreduceAbort = undefined;
        }
      }
      const allreduceSeconds = (Date.now() - ta) / 1000;
      this.#metrics?.allreduce.observe({ ...result, ranks: plan.ring.length, elements: n });
      this.#metrics?.membership.setMembers(plan.ring.length);

      // Outer Nesterov step on copies: θ and the momentum change only when the round commits.
      this.#setPhase('outer');
      const to = Date.now();
      theta = Float32Array.from(this.#theta);
      momentum = Float32Array.from(this.#momentum);
      outerStep(theta, momentum, avg, { lr: cfg.outerLr, momentum: cfg.outerMomentum });
      this.#engine.loadParams(theta);
      hash = this.#engine.paramsHash();
      const outerSeconds = (Date.now() - to) / 1000;
      const report = {
        outcome: 'ROUND_OUTCOME_COMPLETED' as const,
        thetaSha256: hash,
        meanLoss,
        tokens: cfg.innerSteps * B * T,
        timings: { innerSeconds, allreduceSeconds, outerSeconds, totalSeconds: (Date.now() - t0) / 1000 },
        bytesSent: result.bytesSent,
        bytesReceived: result.bytesReceived,
        transcriptSentSha256: result.sentSha256,
        transcriptReceivedSha256: result.receivedSha256,
      };
      v = await this.#report(plan, report);
      while (v.verdict === 'ROUND_VERDICT_ACCEPTED') {
        await sleep(100, signal);
        v = await this.#report(plan, report);
      }
      if (v.verdict !== 'ROUND_VERDICT_COMMITTED') {
        restore();
        if (v.verdict === 'ROUND_VERDICT_RESYNC') await this.#resync(v.committedRound, '', 'hash_mismatch');
        throw new RoundAbandoned();
      }
    } catch (e) {
      restore();
      throw e;
    }

    // Committed: adopt θ(round), keep the update for the coordinator, save.
    this.#theta = theta;
    this.#momentum = momentum;
    this.#round = round;
    this.#thetaHash = hash;
    this.#lastUpdate = { id: plan.id, avg };
    if (v.uploadUpdate) this.#upload(plan.id, avg);
    if (v.uploadDelta && compressed) this.#uploadDelta(plan.id, compressed);
    if (v.openBlocks.length > 0 && compressed) this.#pushOpenings(plan, compressed, v.openBlocks, result.transcript);
    await this.#save();
    this.#committedRounds++;
    const seconds = (Date.now() - t0) / 1000;
    this.#metrics?.membership.roundCommitted(seconds);
    this.#metrics?.membership.setRound(round);
    let valLoss: number | undefined;
    const every = this.#o.evalEvery ?? 1;
    if (every > 0 && this.#val && this.#committedRounds % every === 0) {
      valLoss = await this.#evalLoss().catch((e) => {
        this.#log.warn('eval.failed', { error: errorMessage(e) });
        return undefined;
      });
      if (valLoss !== undefined) this.#metrics?.training.setValLoss(valLoss);
    }
    const fp32Bytes = plan.ring.length < 2 ? 0 : (2 * (plan.ring.length - 1) * 4 * n) / plan.ring.length;
    this.#log.info('round.commit', { round, attempt: plan.id.attempt, members: plan.ring.length, meanLoss, valLoss, seconds, bytesSent: result.bytesSent, thetaSha256: hash });
    this.#o.onEvent?.({ type: 'commit', round, attempt: plan.id.attempt, members: plan.ring.length, meanLoss, valLoss, seconds, bytesSent: result.bytesSent, fp32Bytes, thetaSha256: hash });
    this.#setPhase('idle');
  }

  async #report(plan: RoundPlan & { id: CollectiveId }, body: Omit<Partial<ReportRoundRequest>, 'meta' | 'id'>): Promise<ReportAnswer> {
    return withRetry(() => this.#client.call('reportRound', { id: plan.id, ...body }), { signal: this.#stop.signal }).catch((e) => {
      if (e instanceof RpcError && ['not-in-round', 'round-not-open', 'plan-pending', 'bad-attempt'].includes(e.reason)) {
        this.#log.info('round.dropped', { round: plan.id.round, reason: e.reason });
        throw new RoundAbandoned();
      }
      throw e;
    });
  }

  async #abandon(plan: RoundPlan & { id: CollectiveId }, reason: string): Promise<void> {
    this.#engine.loadParams(this.#theta);
    this.#log.warn('round.abandon', { round: plan.id.round, attempt: plan.id.attempt, reason });
    await this.#client.call('reportRound', { id: plan.id, outcome: 'ROUND_OUTCOME_ABANDONED' }, { deadlineMs: 5000 }).catch(() => undefined);
    if (!this.#stop.signal.aborted) throw new RoundAbandoned();
  }

  /**
   * Serves the shards this worker holds (and the run's manifest) to other members. The address it advertises
   * is `addr`, or with a wildcard host the host of --advertise.
   */
  async #serveData(addr: string): Promise<void> {
    const a = splitHostPort('--serve-data', addr);
    const server = new SignedServer({
      verifier: new RequestVerifier({ runId: this.#o.runId }),
      onRefused: (method, e) => this.#log.warn('request.refused', { method, status: e.status, reason: e.reason, message: e.message }),
      onHandlerError: (method, e) => this.#log.error('handler.error', { method, error: e }),
    });
    const shards = new ShardServer(this.#o.dataDir, this.#train.manifest);
    server.addService(dataPeerService(), {
      getManifest: () => shards.manifest(),
      fetchShard: (req: FetchShardRequest, ctx: { signal: AbortSignal }) => shards.shard(req.file, ctx.signal),
      fetchState: (req: FetchStateRequest, ctx: { signal: AbortSignal }) => streamState(this.#servedState(), req, { signal: ctx.signal }),
    });
    const port = await server.listen(joinHostPort(a.host, a.port));
    this.#dataServer = server;
    const wildcard = a.host === '0.0.0.0' || a.host === '::';
    const host = wildcard ? splitHostPort('--advertise', this.#o.advertise ?? this.#o.listen).host : a.host;
    this.#dataServerAddress = joinHostPort(host, port);
    this.#log.info('data.serve', { address: this.#dataServerAddress, listen: joinHostPort(a.host, port), shards: `${this.#train.manifest.shards.length - this.#train.missing().length}/${this.#train.manifest.shards.length}` });
  }

  /** This worker's committed state as a data peer serves it (built once per committed θ). */
  #servedState(): GlobalState {
    if (!this.#theta || !this.#momentum) throw new RpcError(grpc.status.UNAVAILABLE, 'this worker holds no state yet', 'no-state');
    if (this.#served?.round !== this.#round || this.#served.theta !== this.#theta) {
      let momentum = this.#momentum;
      if (this.#hostile === 'tampered-state') (momentum = Float32Array.from(momentum))[0] += 1e-3;
      this.#served = makeGlobalState(this.#round, this.#theta, momentum);
    }
    return this.#served;
  }

  /** Fetches the shards this round's windows (and the val batches) touch that are not here yet. */
  async #ensureShards(round: number): Promise<void> {
    if (!this.#fetchData) return;
    const cfg = this.#cfg;
    const [B, T] = [cfg.batchSize, cfg.seqLen];
    const need = new Map<string, { loader: DataLoader; entry: ShardEntry }>();
    for (let s = 0; s < cfg.innerSteps; s++) {
      for (const start of assignedStarts(this.#train, cfg.seed, round, this.peerId, s, B, T, cfg.shardsPerRound)) {
        for (const e of this.#train.shardsFor(start, T + 1)) need.set(e.file, { loader: this.#train, entry: e });
      }
    }
    const val = this.#val;
    if (val && val.numTokens > T) for (const e of val.shardsFor(0, Math.min(val.numTokens, (this.#o.evalBatches ?? 8) * B * T + 1))) need.set(e.file, { loader: val, entry: e });
    await this.#fetchMissing(need);
  }

  /** Fetches the train shards that hold these (T+1)-token windows and are not here yet (a validator's checks). */
  async #ensureWindows(starts: number[]): Promise<void> {
    if (!this.#fetchData) return;
    const need = new Map<string, { loader: DataLoader; entry: ShardEntry }>();
    for (const start of starts) for (const e of this.#train.shardsFor(start, this.#cfg.seqLen + 1)) need.set(e.file, { loader: this.#train, entry: e });
    await this.#fetchMissing(need);
  }

  async #fetchMissing(need: Map<string, { loader: DataLoader; entry: ShardEntry }>): Promise<void> {
    const missing = new Set([...this.#train.missing(), ...(this.#val?.missing() ?? [])].map((e) => e.file));
    for (const { loader, entry } of need.values()) {
      if (!missing.has(entry.file)) continue;
      const got = await withRetry(() => this.#sources.fetch(loader, entry, this.#stop.signal), { signal: this.#stop.signal });
      this.#metrics?.data.shardFetches.inc({ source: got.from === 'coordinator' ? 'coordinator' : 'peer' });
      this.#log.info('data.shard', { file: entry.file, bytes: got.bytes, from: got.from, held: this.#heldShards() });
    }
  }

  #heldShards(): string {
    const all = this.#train.manifest.shards.length;
    const missing = this.#train.missing().length + (this.#val?.missing().length ?? 0);
    return `${all - missing}/${all}`;
  }

  /** Mean loss over the first evalBatches val batches. */
  async #evalLoss(): Promise<number> {
    const val = this.#val!;
    const B = this.#cfg.batchSize;
    const T = this.#cfg.seqLen;
    let sum = 0;
    let k = 0;
    for (const batch of val.evalBatches(B, T, this.#o.evalBatches ?? 8)) {
      sum += await this.#engine.evalLoss(batch, B, T);
      k++;
    }
    return k ? sum / k : NaN;
  }
}

// The coordinator's side of a commit. The planner decides a round when the members' θ hashes agree; the
// coordinator then needs θ(round) itself, to serve newcomers and to survive a restart. It asks one
// committed member for the round's averaged pseudo-gradient (PushUpdate, in chunks), applies the outer
// step to its own θ and momentum, and accepts the result only when it has the committed hash. Then, in this
// order: the global state is saved (atomically), the round log line is appended, the in-memory state moves.
// A commit is durable from the save on; a coordinator restart before it resumes from the older state and
// the members resync to it.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { outerStep, OuterSettings } from '../diloco/outer-step';
import { Logger } from '../log';
import { GlobalState, makeGlobalState, saveGlobalState } from './global-state';
import { PushUpdateRequest, PushUpdateResponse, ReportRoundRequest, STATE_CHUNK_BYTES } from './proto';
import { RoundLog, RoundLogEntry } from './round-log';
import { RpcError } from './rpc-error';

/** A round the planner committed, waiting for its update. */
export interface PendingCommit {
  round: number;
  attempt: number;
  /** θ hash the round started from (the previous commit's). */
  prevThetaSha256: string;
  thetaSha256: string;
  /** Members with the committed hash: the only ones asked for the update. */
  members: string[];
  /** Members whose hash disagreed (told to resync). */
  resync: string[];
  ring: string[];
  plannedAtMs: number;
  committedAtMs: number;
}

interface MemberReport {
  request: ReportRoundRequest;
  meanLoss: number;
  tokens: number;
  timings: { innerSeconds: number; allreduceSeconds: number; outerSeconds: number; totalSeconds: number };
}

interface Upload {
  peerId: string;
  round: number;
  sha256: string;
  buf: Buffer;
  received: number;
  lastMs: number;
}

export interface CommitApplierOptions {
  stateDir: string;
  state: () => GlobalState;
  setState: (s: GlobalState) => void;
  roundLog: RoundLog;
  outer: OuterSettings;
  logger: Logger;
  /** Called once a commit is saved, with its round duration (plan to save) in seconds. */
  onApplied?: (commit: PendingCommit, seconds: number, reports: ReadonlyMap<string, ReportRoundRequest>, prev: GlobalState, update: Float32Array) => void;
  /** An uploader silent this long is replaced by the next committed member that reports (default 20 s). */
  uploadStaleMs?: number;
  now?: () => number;
}

const SHA256_RE = /^[0-9a-f]{64}$/;

export class CommitApplier {
  readonly #o: CommitApplierOptions;
  readonly #now: () => number;
  /** Commits in round order; only the first can be applied (it builds on the saved state). */
  readonly #pending: PendingCommit[] = [];
  /** Reports of COMPLETED rounds by `${round}/${attempt}` then peer, for the round log. */
  readonly #reports = new Map<string, Map<string, MemberReport>>();
  #upload: Upload | undefined;
  #applying: Promise<void> = Promise.resolve();

  constructor(opts: CommitApplierOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Rounds committed by the planner whose state is not saved yet. */
  get pendingRounds(): number[] {
    return this.#pending.map((c) => c.round);
  }

  /** Remembers a member's COMPLETED report (loss, tokens, timings) for the round log. */
  recordReport(peerId: string, req: ReportRoundRequest): void {
    if (!req.id || req.outcome !== 'ROUND_OUTCOME_COMPLETED') return;
    const key = `${req.id.round}/${req.id.attempt}`;
    let m = this.#reports.get(key);
    if (!m) this.#reports.set(key, (m = new Map()));
    const t = req.timings ?? { innerSeconds: 0, allreduceSeconds: 0, outerSeconds: 0, totalSeconds: 0 };
    m.set(peerId, { request: req, meanLoss: req.meanLoss, tokens: req.tokens, timings: { ...t } });
  }

  /** The planner committed a round. */
  commit(c: PendingCommit): void {
    this.#pending.push(c);
    // Reports of older rounds can no longer reach the log.
    for (const key of this.#reports.keys()) if (Number(key.split('/')[0]) < c.round - 8) this.#reports.delete(key);
    this.#o.logger.info('state.update-wanted', { round: c.round, attempt: c.attempt, thetaSha256: c.thetaSha256 });
  }

  /** Whether a member that was just told COMMITTED for `round` should upload the update. */
  wantUpload(peerId: string, round: number): boolean {
    const c = this.#pending.find((p) => p.round === round);
    const u = this.#upload;
    // Someone (this peer too: a heartbeat during its own upload) is on it and was heard from lately.
    const busy = !!u && u.round === round && this.#now() - u.lastMs < (this.#o.uploadStaleMs ?? 20_000);
    if (!c || !c.members.includes(peerId) || busy) return false;
    this.#upload = { peerId, round, sha256: '', buf: Buffer.alloc(0), received: 0, lastMs: this.#now() };
    return true;
  }

  /** The round a heartbeating member should upload now: the oldest waiting commit it holds, when nobody else is on it. */
  uploadWantedFrom(peerId: string): number | undefined {
    const c = this.#pending[0];
    return c && this.wantUpload(peerId, c.round) ? c.round : undefined;
  }

  #uploaderActive(round: number, peerId: string): boolean {
    const u = this.#upload;
    return !!u && u.round === round && u.peerId !== peerId && this.#now() - u.lastMs < (this.#o.uploadStaleMs ?? 20_000);
  }

  /** One PushUpdate chunk from `peerId`. */
  async receive(peerId: string, req: PushUpdateRequest): Promise<PushUpdateResponse> {
    const state = this.#o.state();
    if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'PushUpdate needs the collective id of the committed round', 'no-collective-id');
    const round = req.id.round;
    if (round <= state.round && !this.#pending.some((p) => p.round === round)) {
      return { receivedBytes: 0, applied: true, stateRound: state.round }; // already saved: nothing to do
    }
    const c = this.#pending.find((p) => p.round === round);
    if (!c) throw new RpcError(grpc.status.FAILED_PRECONDITION, `round ${round} has no commit waiting for its update`, 'no-pending-commit');
    if (!c.members.includes(peerId)) {
      throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} does not hold round ${round}'s committed state`, 'not-in-round');
    }
    const total = 4 * state.theta.length;
    if (req.totalBytes !== total) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `update total_bytes ${req.totalBytes} is not 4 × ${state.theta.length} parameters = ${total}`, 'bad-size');
    }
    if (!SHA256_RE.test(req.sha256)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `update sha256 ${JSON.stringify(req.sha256)} is not 64 lowercase hex digits`, 'bad-hash');
    const data = req.data ?? Buffer.alloc(0);
    if (data.length > STATE_CHUNK_BYTES || req.offset + data.length > total || (data.length === 0 && req.offset !== total)) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `update chunk [${req.offset}, +${data.length}) does not fit a ${total}-byte payload in chunks of at most ${STATE_CHUNK_BYTES}`, 'bad-chunk');
    }
    let u = this.#upload;
    if (req.offset === 0) {
      if (this.#uploaderActive(round, peerId) && u!.received > 0) {
        throw new RpcError(grpc.status.ALREADY_EXISTS, `another member is uploading round ${round}'s update`, 'upload-busy');
      }
      u = this.#upload = { peerId, round, sha256: req.sha256, buf: Buffer.alloc(total), received: 0, lastMs: this.#now() };
    } else if (!u || u.peerId !== peerId || u.round !== round || u.sha256 !== req.sha256 || u.received !== req.offset) {
      throw new RpcError(grpc.status.OUT_OF_RANGE, `update chunk at offset ${req.offset} does not continue this peer's upload (held: ${u && u.peerId === peerId ? u.received : 0} bytes); restart at offset 0`, 'bad-offset');
    }
    data.copy(u.buf, u.received);
    u.received += data.length;
    u.lastMs = this.#now();
    if (u.received < total) return { receivedBytes: u.received, applied: false, stateRound: state.round };

    this.#upload = undefined;
    const digest = crypto.createHash('sha256').update(u.buf).digest('hex');
    if (digest !== u.sha256) {
      throw new RpcError(grpc.status.DATA_LOSS, `update payload SHA-256 is ${digest} but the upload declared ${u.sha256}`, 'update-corrupt');
    }
    const applied = this.#applying.then(() => this.#apply(c, u.buf, peerId));
    this.#applying = applied.catch(() => undefined);
    await applied;
    return { receivedBytes: total, applied: true, stateRound: this.#o.state().round };
  }

  async #apply(c: PendingCommit, payload: Buffer, peerId: string): Promise<void> {
    const log = this.#o.logger;
    const state = this.#o.state();
    if (this.#pending[0] !== c) {
      if (!this.#pending.includes(c)) return; // applied meanwhile by another upload
      throw new RpcError(grpc.status.FAILED_PRECONDITION, `round ${c.round}'s update builds on round ${this.#pending[0].round}, whose update has not arrived`, 'update-out-of-order');
    }
    if (state.thetaHash !== c.prevThetaSha256) {
      throw new RpcError(grpc.status.INTERNAL, `the saved state's θ ${state.thetaHash} is not the one round ${c.round} started from (${c.prevThetaSha256})`, 'state-diverged');
    }
    const delta = new Float32Array(payload.length / 4);
    Buffer.from(delta.buffer).set(payload);
    const theta = Float32Array.from(state.theta);
    const momentum = Float32Array.from(state.momentum);
    try {
      outerStep(theta, momentum, delta, this.#o.outer);
    } catch (e) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `update of round ${c.round}: ${(e as Error).message}`, 'update-not-finite');
    }
    const next = makeGlobalState(c.round, theta, momentum);
    if (next.thetaHash !== c.thetaSha256) {
      log.warn('state.update-mismatch', { round: c.round, peerId, thetaSha256: next.thetaHash, committed: c.thetaSha256 });
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `applying this update gives θ ${next.thetaHash}, not the committed ${c.thetaSha256}`, 'update-mismatch');
    }
    await saveGlobalState(this.#o.stateDir, next);
    this.#pending.shift();
    this.#o.setState(next);
    const savedAtMs = this.#now();
    await this.#o.roundLog.append(this.#entry(c));
    const seconds = Math.max(0, (savedAtMs - c.plannedAtMs) / 1000);
    const reports = new Map([...(this.#reports.get(`${c.round}/${c.attempt}`) ?? new Map<string, MemberReport>())].map(([p, r]) => [p, r.request]));
    this.#o.onApplied?.(c, seconds, reports, state, delta);
    log.info('state.commit', { round: c.round, attempt: c.attempt, thetaSha256: c.thetaSha256, from: peerId, seconds });
  }

  #entry(c: PendingCommit): RoundLogEntry {
    const reports = [...(this.#reports.get(`${c.round}/${c.attempt}`) ?? new Map<string, MemberReport>()).entries()]
      .filter(([p]) => c.members.includes(p))
      .map(([, r]) => r);
    const mean = (f: (r: MemberReport) => number) => (reports.length ? reports.reduce((a, r) => a + f(r), 0) / reports.length : 0);
    const losses = reports.map((r) => r.meanLoss).filter((x) => Number.isFinite(x));
    return {
      round: c.round,
      attempt: c.attempt,
      members: [...c.members],
      ring: [...c.ring],
      tokens: reports.reduce((a, r) => a + r.tokens, 0),
      meanLoss: losses.length ? losses.reduce((a, b) => a + b, 0) / losses.length : null,
      thetaSha256: c.thetaSha256,
      plannedAtMs: c.plannedAtMs,
      committedAtMs: c.committedAtMs,
      timings: {
        innerSeconds: mean((r) => r.timings.innerSeconds),
        allreduceSeconds: mean((r) => r.timings.allreduceSeconds),
        outerSeconds: mean((r) => r.timings.outerSeconds),
        totalSeconds: mean((r) => r.timings.totalSeconds),
      },
    };
  }
}

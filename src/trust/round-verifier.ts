// The validator's work after a round commits: pick the members to check (a sample fixed by the committed θ
// hash, so nobody could know it in advance), collect each one's whole compressed Δ (PushDelta, checked
// against its commitment's Merkle root and norm), and run the useful-work check on θ(r − 1). The result is
// a MemberCheck per member for the ledger; members not sampled keep the checks of their commitment. Where the
// run names validator members, the useful-work part goes to one of them (never the member itself) through
// CheckDelegation; the coordinator runs it itself only without one (or when the validator declines).
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { DataLoader } from '../data/loader';
import { MemberCheck } from '../ledger/commit-entry';
import { Logger } from '../log';
import { Engine } from '../native';
import { GlobalState } from '../swarm/global-state';
import { PushUpdateRequest, PushUpdateResponse, STATE_CHUNK_BYTES } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { CheckDelegation, DelegatedOutcome } from './check-delegation';
import { CommitmentBook } from './commitments';
import { decodeDelta, deltaNorm, deltaRoot, sha256Hex } from './delta-blocks';
import { CompressedDelta } from './delta-blocks';
import { checkBatchCount, CheckLosses, judgeUsefulWork, measureUsefulWork, usefulWorkFromLosses, UsefulWorkResult } from './useful-work';

/** Largest relative difference between a validator's losses and the coordinator's that still agrees. */
export const AUDIT_TOLERANCE = 1e-4;

/** max |a − b| / max(1, |b|) over every loss of the check (Infinity when the shapes differ). */
export function lossDisagreement(a: CheckLosses, b: CheckLosses): number {
  let worst = 0;
  for (const k of ['assignedBefore', 'assignedAfter', 'controlBefore', 'controlAfter'] as const) {
    if (a[k].length !== b[k].length) return Infinity;
    for (let i = 0; i < a[k].length; i++) worst = Math.max(worst, Math.abs(a[k][i] - b[k][i]) / Math.max(1, Math.abs(b[k][i])));
  }
  return worst;
}

export interface RoundVerifierOptions {
  book: CommitmentBook;
  /** Engine and training data for the useful-work check; without them only commitments are checked. */
  engine?: Engine;
  loader?: DataLoader;
  runSeed: number;
  innerSteps: number;
  B: number;
  T: number;
  shardsPerRound: number;
  numParams: number;
  blockSize: number;
  /** Members checked per checked round (0: all). */
  sample: number;
  /** About one round in `every` is checked (1: every round). */
  every?: number;
  /** Eval batches per side of the useful-work check. */
  batches: number;
  /** How long to wait for sampled members' Δ and the checks. */
  timeoutMs: number;
  logger: Logger;
  /** Called with every useful-work check's result. */
  onCheck?: (ok: boolean) => void;
  /** Members given the validator role (run config `validators`) and the queue their checks go through. */
  validators?: readonly string[];
  delegation?: CheckDelegation;
  /** Delegated checks per checked round the coordinator measures again itself, when it can (default 1). */
  audits?: number;
  /** Called with what became of each delegated check. */
  onDelegated?: (outcome: 'measured' | 'declined' | 'audit_agreed' | 'audit_disagreed') => void;
}

interface RoundChecks {
  round: number;
  members: string[];
  sampled: Set<string>;
  /** Who checks each sampled member: a validator member's peer id, or '' for the coordinator itself. */
  checkers: Map<string, string>;
  prevThetaSha256: string;
  /** Sampled members whose Δ has not arrived (they fail at the deadline); `pending` also holds checks running. */
  awaiting: Set<string>;
  started: Set<string>;
  deltas: Map<string, { buf: Buffer; received: number; sha256: string; complete: boolean }>;
  checks: Map<string, MemberCheck>;
  /** Delegated checks the coordinator measures again to audit their validator. */
  audits: Set<string>;
  /** Validator members caught lying in this round: failed with a proof when the round's checks are done. */
  liars: Map<string, MemberCheck>;
  prev?: GlobalState;
  /** Resolves once setPrevState gave θ(round − 1). */
  prevReady: Promise<void>;
  prevSet: () => void;
  pending: Set<string>;
  done: Promise<Map<string, MemberCheck>>;
  finish: () => void;
}

/** The members to check: the `k` first by SHA-256(thetaSha256 | round | peer), i.e. a draw nobody knew before the round committed. */
export function sampleMembers(members: readonly string[], k: number, thetaSha256: string, round: number): string[] {
  const key = (p: string) => crypto.createHash('sha256').update(`${thetaSha256}|${round}|${p}`).digest('hex');
  const sorted = [...members].sort((a, b) => (key(a) < key(b) ? -1 : 1));
  return k <= 0 ? sorted : sorted.slice(0, k);
}

/**
 * Quality scores of the members that passed: gain on their own windows against half the median gain of the
 * round's passing members, capped at 1 (a member doing at least half the typical work gets full credit).
 */
function scored(checks: Map<string, MemberCheck>): Map<string, MemberCheck> {
  const gains = [...checks.values()].filter((c) => c.ok && c.gainAssigned !== undefined).map((c) => c.gainAssigned!).sort((a, b) => a - b);
  if (gains.length === 0) return checks;
  const med = gains.length % 2 ? gains[gains.length >> 1] : (gains[(gains.length >> 1) - 1] + gains[gains.length >> 1]) / 2;
  for (const c of checks.values()) {
    if (c.ok && c.gainAssigned !== undefined && med > 0) c.score = Math.max(0, Math.min(1, c.gainAssigned / (0.5 * med)));
  }
  return checks;
}

/** Whether round `round` is checked: SHA-256(θ hash | round | "check") mod every == 0, unknown before the commit. */
export function roundIsChecked(thetaSha256: string, round: number, every: number): boolean {
  if (every <= 1) return true;
  return crypto.createHash('sha256').update(`${thetaSha256}|${round}|check`).digest().readUIntBE(0, 6) % every === 0;
}

export class RoundVerifier {
  readonly #o: RoundVerifierOptions;
  readonly #rounds = new Map<number, RoundChecks>();
  /** Validator members caught lying: given no more checks for the rest of the run. */
  readonly #revoked = new Set<string>();
  #closed = false;
  /** One validator engine: checks run one at a time, across rounds too. */
  #queue: Promise<void> = Promise.resolve();

  constructor(o: RoundVerifierOptions) {
    this.#o = o;
  }

  /** Stops checking (the coordinator is stopping): running checks finish, no result is delivered any more. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue;
  }

  /** The coordinator runs useful-work checks itself (it has an engine and the data). */
  get checksLocally(): boolean {
    return !!(this.#o.engine && this.#o.loader);
  }

  /** Some useful-work check can run: locally, or by a validator member. */
  get checksWork(): boolean {
    return this.checksLocally || (!!this.#o.delegation && (this.#o.validators?.length ?? 0) > 0);
  }

  /**
   * Who checks `peerId` in this round: the validator member first by SHA-256(θ hash | round | peer |
   * validator) among those that committed the round (they hold θ(round − 1)) other than the member itself;
   * else '' (the coordinator) when it can; else undefined (nobody can).
   */
  #checkerOf(peerId: string, members: readonly string[], thetaSha256: string, round: number): string | undefined {
    const vs = this.#o.delegation ? (this.#o.validators ?? []).filter((v) => v !== peerId && members.includes(v) && !this.#revoked.has(v)) : [];
    if (vs.length) {
      const k = (v: string) => crypto.createHash('sha256').update(`${thetaSha256}|${round}|${peerId}|${v}`).digest('hex');
      return vs.reduce((a, b) => (k(b) < k(a) ? b : a));
    }
    return this.checksLocally ? '' : undefined;
  }

  /** A round committed with these members from θ(round − 1) = prevThetaSha256: start collecting. */
  begin(round: number, members: readonly string[], thetaSha256: string, prevThetaSha256 = ''): void {
    const checked = this.checksWork && roundIsChecked(thetaSha256, round, this.#o.every ?? 1);
    const checkers = new Map<string, string>();
    if (checked) {
      for (const p of members) {
        const c = this.#checkerOf(p, members, thetaSha256, round);
        if (c !== undefined) checkers.set(p, c);
      }
    }
    const sampled = new Set(sampleMembers([...checkers.keys()], this.#o.sample, thetaSha256, round));
    for (const p of checkers.keys()) if (!sampled.has(p)) checkers.delete(p);
    const delegated = [...checkers].filter(([, v]) => v).map(([p]) => p);
    const audits = new Set(this.checksLocally ? sampleMembers(delegated, this.#o.audits ?? 1, `${thetaSha256}|audit`, round).slice(0, this.#o.audits ?? 1) : []);
    let finish = () => undefined as void;
    const r: RoundChecks = {
      round,
      members: [...members],
      sampled,
      checkers,
      prevThetaSha256,
      awaiting: new Set(sampled),
      started: new Set(),
      deltas: new Map(),
      checks: new Map(),
      audits,
      liars: new Map(),
      prevReady: Promise.resolve(),
      prevSet: () => undefined,
      pending: new Set(sampled),
      done: Promise.resolve(new Map()),
      finish: () => finish(),
    };
    r.prevReady = new Promise((resolve) => {
      r.prevSet = resolve;
    });
    r.done = new Promise((resolve) => {
      finish = () => {
        for (const [v, f] of r.liars) r.checks.set(v, f);
        if (!this.#closed) resolve(scored(r.checks));
      };
      const timer = setTimeout(() => {
        for (const p of r.awaiting) {
          r.checks.set(p, { ok: false, score: 0, soft: true, reason: 'delta-not-received: no complete Δ upload before the verification deadline' });
          r.pending.delete(p);
        }
        r.awaiting.clear();
        if (r.pending.size === 0) finish();
      }, this.#o.timeoutMs);
      timer.unref();
    });
    if (r.pending.size === 0) r.finish();
    this.#rounds.set(round, r);
    for (const k of this.#rounds.keys()) if (k < round - 8) this.#rounds.delete(k);
    if (sampled.size) this.#o.logger.info('trust.sample', { round, sampled: [...sampled], checkers: Object.fromEntries([...checkers].filter(([, v]) => v)) });
  }

  /** θ(round − 1), once the coordinator has it: checks with a Δ in hand can run. */
  setPrevState(round: number, prev: GlobalState): void {
    const r = this.#rounds.get(round);
    if (!r) return;
    r.prev = prev;
    r.prevSet();
    for (const p of r.deltas.keys()) this.#maybeCheck(r, p);
  }

  wantsDelta(peerId: string, round: number): boolean {
    const r = this.#rounds.get(round);
    return !!r && r.pending.has(peerId) && !r.deltas.get(peerId)?.complete;
  }

  /** Resolves with every member's check once the sampled ones are done (or timed out). */
  result(round: number): Promise<Map<string, MemberCheck>> {
    return this.#rounds.get(round)?.done ?? Promise.resolve(new Map());
  }

  async receive(peerId: string, req: PushUpdateRequest): Promise<PushUpdateResponse> {
    if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'PushDelta needs the collective id of the committed round', 'no-collective-id');
    const r = this.#rounds.get(req.id.round);
    if (!r || !r.sampled.has(peerId)) throw new RpcError(grpc.status.FAILED_PRECONDITION, `the validator did not ask peer ${peerId} for its Δ of round ${req.id.round}`, 'delta-not-wanted');
    if (!r.pending.has(peerId)) return { receivedBytes: 0, applied: true, stateRound: r.round };
    const blocks = Math.ceil(this.#o.numParams / this.#o.blockSize);
    const total = 4 * blocks + this.#o.numParams;
    if (req.totalBytes !== total) throw new RpcError(grpc.status.INVALID_ARGUMENT, `Δ upload total_bytes ${req.totalBytes} is not ${total}`, 'bad-size');
    const data = req.data ?? Buffer.alloc(0);
    if (data.length > STATE_CHUNK_BYTES || req.offset + data.length > total) throw new RpcError(grpc.status.INVALID_ARGUMENT, `Δ chunk [${req.offset}, +${data.length}) does not fit`, 'bad-chunk');
    let u = r.deltas.get(peerId);
    if (req.offset === 0) r.deltas.set(peerId, (u = { buf: Buffer.alloc(total), received: 0, sha256: req.sha256, complete: false }));
    else if (!u || u.received !== req.offset || u.sha256 !== req.sha256) throw new RpcError(grpc.status.OUT_OF_RANGE, `Δ chunk at ${req.offset} does not continue the upload; restart at 0`, 'bad-offset');
    data.copy(u.buf, u.received);
    u.received += data.length;
    if (u.received < total) return { receivedBytes: u.received, applied: false, stateRound: r.round };
    if (sha256Hex(u.buf) !== u.sha256) {
      r.deltas.delete(peerId);
      throw new RpcError(grpc.status.DATA_LOSS, 'the Δ upload does not match its declared SHA-256', 'delta-corrupt');
    }
    u.complete = true;
    r.awaiting.delete(peerId);
    this.#maybeCheck(r, peerId);
    return { receivedBytes: total, applied: true, stateRound: r.round };
  }

  #maybeCheck(r: RoundChecks, peerId: string): void {
    const u = r.deltas.get(peerId);
    if (this.#closed || !u || !u.complete || !r.pending.has(peerId) || r.started.has(peerId)) return;
    const checker = r.checkers.get(peerId);
    if (checker) {
      r.started.add(peerId);
      void this.#delegate(r, peerId, u.buf, u.sha256, checker);
    } else if (r.prev) {
      r.started.add(peerId);
      this.#checkLocally(r, peerId, u.buf);
    }
  }

  #settle(r: RoundChecks, peerId: string, check: MemberCheck, measured: boolean): void {
    if (this.#closed || !r.pending.has(peerId)) return;
    r.checks.set(peerId, check);
    r.pending.delete(peerId);
    if (measured) this.#o.onCheck?.(check.ok);
    this.#o.logger.info('trust.check', { round: r.round, peerId, ok: check.ok, score: check.score, reason: check.reason, checkedBy: check.checkedBy });
    if (r.pending.size === 0) r.finish();
  }

  /** The cheap part that is always the coordinator's: the payload must be the committed Δ (root and norm). */
  #committed(r: RoundChecks, peerId: string, payload: Buffer): CompressedDelta | MemberCheck {
    const c = this.#o.book.get(r.round, peerId);
    if (!c) return { ok: false, score: 0, reason: 'no commitment for the round' };
    let d;
    try {
      d = decodeDelta(payload, this.#o.numParams, this.#o.blockSize);
    } catch (e) {
      return { ok: false, score: 0, reason: `delta-malformed: ${(e as Error).message}` };
    }
    const root = deltaRoot(d);
    if (root !== c.merkleRoot) return { ok: false, score: 0, reason: `delta-mismatch: the uploaded Δ has root ${root.slice(0, 16)}…, the commitment ${c.merkleRoot.slice(0, 16)}…` };
    const norm = deltaNorm(d);
    if (Math.abs(norm - c.deltaNorm) > 1e-6 * Math.max(1, norm)) return { ok: false, score: 0, reason: `norm-mismatch: the Δ's norm is ${norm}, the commitment says ${c.deltaNorm}` };
    return d;
  }

  /** Measures the check on the coordinator's engine, one at a time (the queue is shared with its own checks). */
  #measureLocally(r: RoundChecks, peerId: string, d: CompressedDelta): Promise<CheckLosses> {
    const run = this.#queue.then(() => measureUsefulWork(this.#o.engine!, this.#o.loader!, r.prev!.theta, d, this.#input(r, peerId)));
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #verdict(r: RoundChecks, peerId: string, res: UsefulWorkResult, extra: Partial<MemberCheck> = {}): MemberCheck {
    const v = judgeUsefulWork(res);
    this.#o.logger.debug('trust.useful-work', { round: r.round, peerId, checkedBy: extra.checkedBy, ...res });
    const evidence = { gainAssigned: res.gainAssigned, gainControl: res.gainControl, ...extra };
    return v.ok ? { ok: true, score: 1, ...evidence } : { ok: false, score: 0, soft: true, reason: v.reason, ...evidence };
  }

  #checkLocally(r: RoundChecks, peerId: string, payload: Buffer): void {
    const d = this.#committed(r, peerId, payload);
    if (!('codes' in d)) return this.#settle(r, peerId, d, true);
    void this.#measureLocally(r, peerId, d).then(
      (l) => this.#settle(r, peerId, this.#verdict(r, peerId, usefulWorkFromLosses(l)), true),
      // A failure of the validator itself is not the member's: it keeps its credit.
      (e: unknown) => {
        this.#o.logger.error('trust.check-error', { round: r.round, peerId, error: e });
        this.#settle(r, peerId, { ok: true, score: 1, reason: `not checked: ${(e as Error).message}` }, false);
      },
    );
  }

  /**
   * The coordinator measures an audited delegated check again. Agreement (AUDIT_TOLERANCE): the validator's
   * result stands. Disagreement: the validator lied (or its engine is broken, which the run cannot tell apart):
   * it fails the round with the two measurements as the proof, loses the role, and every check it ran or holds
   * in rounds not yet recorded is measured again here.
   */
  async #audit(r: RoundChecks, peerId: string, d: CompressedDelta, out: Extract<DelegatedOutcome, { kind: 'measured' }>): Promise<MemberCheck> {
    const validator = out.validator;
    const claimed = this.#verdict(r, peerId, out.result, { checkedBy: validator, check: out.record });
    let mine: CheckLosses;
    try {
      mine = await this.#measureLocally(r, peerId, d);
    } catch (e) {
      this.#o.logger.error('trust.check-error', { round: r.round, peerId, error: e });
      return claimed;
    }
    const diff = lossDisagreement(out.losses, mine);
    this.#o.onDelegated?.(diff <= AUDIT_TOLERANCE ? 'audit_agreed' : 'audit_disagreed');
    if (diff <= AUDIT_TOLERANCE) {
      this.#o.logger.info('trust.validator-audit', { round: r.round, peerId, validator, ok: true, disagreement: diff });
      return claimed;
    }
    this.#o.logger.warn('trust.validator-mismatch', { round: r.round, peerId, validator, disagreement: diff });
    this.#revoked.add(validator);
    r.liars.set(validator, { ok: false, score: 0, reason: `validator-mismatch: its losses for ${peerId.slice(0, 8)}… differ from the coordinator's by ${diff.toExponential(2)} (relative)` });
    for (const other of this.#rounds.values()) {
      for (const [p, v] of other.checkers) {
        if (v !== validator || (other === r && p === peerId)) continue;
        other.checkers.set(p, '');
        this.#o.delegation?.cancel(other.round, p, `validator ${validator.slice(0, 8)} lost the role`); // open tasks fall back
        const u = other.deltas.get(p);
        const settled = other.checks.get(p)?.checkedBy === validator && !other.pending.has(p);
        if (settled && u?.complete && other.prev && other.pending.size > 0) {
          other.checks.delete(p);
          other.pending.add(p);
          this.#checkLocally(other, p, u.buf);
        }
      }
    }
    return this.#verdict(r, peerId, usefulWorkFromLosses(mine));
  }

  /** The useful-work part by a validator member; what it cannot do falls back to the coordinator, if it can. */
  async #delegate(r: RoundChecks, peerId: string, payload: Buffer, deltaSha256: string, validator: string): Promise<void> {
    const d = this.#committed(r, peerId, payload);
    if (!('codes' in d)) return this.#settle(r, peerId, d, true);
    const delegation = this.#o.delegation!;
    const timer = setTimeout(() => delegation.cancel(r.round, peerId, `no answer within ${this.#o.timeoutMs} ms`), this.#o.timeoutMs);
    timer.unref();
    const out: DelegatedOutcome = await delegation.assign({ round: r.round, peerId, validator, prevThetaSha256: r.prevThetaSha256, deltaSha256, payload, batches: checkBatchCount(this.#input(r, peerId)) });
    clearTimeout(timer);
    if (this.#closed) return;
    this.#o.onDelegated?.(out.kind);
    if (out.kind === 'measured') {
      if (r.audits.has(peerId) && this.checksLocally) {
        await r.prevReady;
        return this.#settle(r, peerId, await this.#audit(r, peerId, d, out), true);
      }
      return this.#settle(r, peerId, this.#verdict(r, peerId, out.result, { checkedBy: validator, check: out.record }), true);
    }
    this.#o.logger.warn('trust.check-declined', { round: r.round, peerId, validator, reason: out.reason, fallback: this.checksLocally && !!r.prev });
    if (this.checksLocally) {
      r.checkers.set(peerId, '');
      if (r.prev) return this.#checkLocally(r, peerId, payload);
      r.started.delete(peerId); // setPrevState starts it
      return;
    }
    this.#settle(r, peerId, { ok: true, score: 1, reason: `not checked: validator ${validator.slice(0, 8)} declined: ${out.reason}` }, false);
  }

  #input(r: RoundChecks, peerId: string) {
    const o = this.#o;
    return { runSeed: o.runSeed, round: r.round, peerId, innerSteps: o.innerSteps, B: o.B, T: o.T, shardsPerRound: o.shardsPerRound, batches: o.batches };
  }
}

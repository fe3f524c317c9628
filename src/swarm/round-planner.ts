// The coordinator's round planning: pure logic with an injectable clock and random source; the GetPlan and
// ReportRound handlers (coordinator-service.ts) call it.
//
// Rules (also in docs/protocol.md's spirit; this comment is the reference):
// - Rounds are numbered from `startRound` (default 1). `committedRound` is the last round that committed
//   (0: none); the state a round starts from is the committed one (its hash is `thetaSha256`), so a worker's
//   state_round equals committedRound when it is in sync.
// - A round opens (at construction, or when the previous round commits or is abandoned) and its members are
//   fixed at the planning deadline, `planDelayMs` after it opened: the peers `members()` lists then, less
//   those excluded (told to resync and not yet synced). Fewer than `minMembers`: the round waits (PENDING) and
//   tries again on every later call. A peer that was not listed at that moment (a straggler) sits the round
//   out (NOT_MEMBER) and is planned into the next round.
// - Ring order: the members sorted by SHA-256(`${seed}|${round}|${attempt}|${peerId}`) as lowercase hex (ties,
//   impossible in practice, by peer id); rank i is the i-th. Anyone with the seed can recompute it.
// - Every (round, attempt) gets a fresh 32-byte all-reduce secret from `randomBytes` (crypto.randomBytes).
// - A failed all-reduce (reportFailure) re-plans the round as attempt + 1 with the attempt's members less the
//   suspects and less the peers `members()` no longer lists; a failure report for an older attempt changes
//   nothing (the re-plan already happened). After `maxAttempts` attempts (0 .. maxAttempts − 1), or when the
//   survivors are fewer than minMembers, the round is abandoned: nothing commits and round + 1 opens from the
//   same committed state.
// - Hash reports (reportHash) are collected for the round's current attempt; when every member of it has
//   reported, the round is decided: a hash held by a strict majority of the members commits (round + 1 opens)
//   and the members with another hash get RESYNC (and are left out of plans until markSynced, or until
//   members() lists them holding the committed hash, i.e. they re-joined after FetchState); with no
//   strict majority nothing commits, every member gets RESYNC and the round is abandoned. When the attempt's
//   deadline passes with some hash reports but not all, tick() decides with the reports it has (the
//   all-reduce succeeded; the silent members get no verdict). A deadline with no report at all re-plans
//   without the silent members.
// - Refusals: a report from a peer that is not a member of the round's current attempt is PERMISSION_DENIED
//   ('not-in-round'); a report for a round that is not open (future), for an attempt that was never planned,
//   or before the plan is fixed is FAILED_PRECONDITION ('round-not-open', 'bad-attempt', 'plan-pending'); a
//   peer that reports two different hashes for one attempt is FAILED_PRECONDITION ('conflicting-report'). A
//   member that repeats its report for the last decided round gets its verdict again.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { invalidParameter } from '../train/model-config';
import type { CollectiveId, RingMember } from './proto';
import { RpcError } from './rpc-error';

/** What the planner needs of a present member (a membership.ts Member fits). */
export interface PlannerMember {
  readonly peerId: string;
  readonly address: string;
  /** What the peer last said it holds (membership.ts MemberInfo); a resyncing peer that holds the committed hash is planned again. */
  readonly info?: { readonly thetaSha256: string };
}

export interface RoundPlannerOptions {
  /** The run seed; the ring order derives from it. */
  seed: string | number;
  /** The peers present now (e.g. () => membership.list()). */
  members: () => readonly PlannerMember[];
  /** Fewest members a round runs with (≥ 1). */
  minMembers: number;
  /** Attempts per round, the first included (≥ 1). */
  maxAttempts: number;
  /** From a round's opening to its planning deadline (members fixed), ms (≥ 0). */
  planDelayMs: number;
  /** From a plan's fixing to the time its members must have reported, ms (> 0). */
  roundDeadlineMs: number;
  /** What PENDING answers tell a caller to wait when no better hint exists; default 500 ms. */
  retryAfterMs?: number;
  /** First round; default 1. */
  startRound?: number;
  /** Last committed round (0: none) and its state's hash, when resuming. */
  committedRound?: number;
  thetaSha256?: string;
  /** Clock, ms since the epoch; default Date.now. */
  now?: () => number;
  /** Random source for the secrets; default crypto.randomBytes. */
  randomBytes?: (n: number) => Buffer;
  /** Called for every plan, re-plan, commit and abandonment. */
  onEvent?: (event: PlannerEvent) => void;
}

export type PeerVerdict = 'committed' | 'resync';

export type PlannerEvent =
  | { type: 'plan'; round: number; attempt: number; ring: RingMember[] }
  | { type: 'replan'; round: number; attempt: number; ring: RingMember[]; removed: string[]; reason: string }
  | { type: 'commit'; round: number; attempt: number; thetaSha256: string; verdicts: Map<string, PeerVerdict> }
  | { type: 'abandon'; round: number; attempt: number; reason: string };

/** A plan as one peer sees it. */
export type PlanView =
  | { status: 'pending'; round: number; retryAfterMs: number }
  | { status: 'not-member'; round: number; attempt: number }
  | {
      status: 'ready';
      id: CollectiveId;
      ring: RingMember[];
      rank: number;
      secret: Buffer;
      deadlineMs: number;
      thetaSha256: string;
    };

/** The outcome of a report for the reporter: 'accepted' (waiting for the others), 'committed', 'replan' (call GetPlan), 'resync'. */
export type ReportVerdict = 'accepted' | 'committed' | 'replan' | 'resync';

export interface Decision {
  round: number;
  attempt: number;
  committed: boolean;
  /** The committed hash ('' when nothing committed). */
  thetaSha256: string;
  verdicts: Map<string, PeerVerdict>;
}

export interface ReportResult {
  verdict: ReportVerdict;
  /** Set when this report decided the round. */
  decision?: Decision;
}

interface Attempt {
  attempt: number;
  ring: RingMember[];
  secret: Buffer;
  fixedAtMs: number;
  deadlineMs: number;
  hashes: Map<string, string>;
}

/** The ring order of `peerIds` for (seed, round, attempt): sorted by SHA-256(`${seed}|${round}|${attempt}|${peerId}`) hex. */
export function ringOrder(seed: string | number, round: number, attempt: number, peerIds: readonly string[]): string[] {
  const key = (p: string) => crypto.createHash('sha256').update(`${seed}|${round}|${attempt}|${p}`).digest('hex');
  return peerIds
    .map((p) => ({ p, k: key(p) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.p < b.p ? -1 : a.p > b.p ? 1 : 0))
    .map((x) => x.p);
}

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new RangeError(invalidParameter(name, `an integer ≥ ${min}`, v));
  return v;
}

export class RoundPlanner {
  readonly seed: string | number;
  readonly minMembers: number;
  readonly maxAttempts: number;
  readonly planDelayMs: number;
  readonly roundDeadlineMs: number;
  readonly retryAfterMs: number;
  readonly #members: () => readonly PlannerMember[];
  readonly #now: () => number;
  readonly #random: (n: number) => Buffer;
  readonly #onEvent?: (event: PlannerEvent) => void;

  #round: number;
  #openedAtMs: number;
  #attempt: Attempt | undefined;
  #committedRound: number;
  #theta: string;
  /** Peers told to resync: left out of plans until markSynced. */
  readonly #resyncing = new Set<string>();
  /** Peers that failed a check: left out of plans before the round given. */
  readonly #excludedUntil = new Map<string, number>();
  #lastDecision: Decision | undefined;

  constructor(options: RoundPlannerOptions) {
    if (typeof options.seed !== 'string' && typeof options.seed !== 'number') throw new TypeError(invalidParameter('seed', 'a string or number', options.seed));
    if (typeof options.members !== 'function') throw new TypeError(invalidParameter('members', 'a function', options.members));
    this.seed = options.seed;
    this.minMembers = checkInt('minMembers', options.minMembers, 1);
    this.maxAttempts = checkInt('maxAttempts', options.maxAttempts, 1);
    this.planDelayMs = checkInt('planDelayMs', options.planDelayMs, 0);
    this.roundDeadlineMs = checkInt('roundDeadlineMs', options.roundDeadlineMs, 1);
    this.retryAfterMs = checkInt('retryAfterMs', options.retryAfterMs ?? 500, 1);
    this.#members = options.members;
    this.#now = options.now ?? Date.now;
    this.#random = options.randomBytes ?? ((n) => crypto.randomBytes(n));
    this.#onEvent = options.onEvent;
    this.#round = checkInt('startRound', options.startRound ?? 1, 1);
    this.#committedRound = checkInt('committedRound', options.committedRound ?? 0, 0);
    this.#theta = options.thetaSha256 ?? '';
    this.#openedAtMs = this.#now();
  }

  /** The round being planned or run. */
  get round(): number {
    return this.#round;
  }
  get committedRound(): number {
    return this.#committedRound;
  }
  get thetaSha256(): string {
    return this.#theta;
  }
  /** Attempt of the current round's plan (0 before and at the first plan). */
  get attempt(): number {
    return this.#attempt?.attempt ?? 0;
  }
  /** The last decided round (committed or not), with every member's verdict. */
  get lastDecision(): Decision | undefined {
    return this.#lastDecision;
  }
  /** When the current round's members are (or were) fixed. */
  get planDeadlineMs(): number {
    return this.#openedAtMs + this.planDelayMs;
  }

  /** The view the membership handlers take (CoordinatorRunView). */
  runView(): { round(): number; committedRound(): number; thetaSha256(): string; planAttempt(): number } {
    return {
      round: () => this.tick().round,
      committedRound: () => this.#committedRound,
      thetaSha256: () => this.#theta,
      planAttempt: () => this.tick().attempt,
    };
  }

  /** A peer told to resync has fetched the committed state: plan it again from the next round it is present at. */
  markSynced(peerId: string): void {
    this.#resyncing.delete(peerId);
  }
  isResyncing(peerId: string): boolean {
    return this.#resyncing.has(peerId);
  }

  /** Leaves `peerId` out of every plan of rounds before `untilRound` (a failed verification's penalty). */
  exclude(peerId: string, untilRound: number): void {
    this.#excludedUntil.set(peerId, Math.max(untilRound, this.#excludedUntil.get(peerId) ?? 0));
  }
  /** The first round `peerId` may be planned into again (undefined: not excluded). */
  excludedUntil(peerId: string): number | undefined {
    const r = this.#excludedUntil.get(peerId);
    return r !== undefined && r > this.#round ? r : undefined;
  }

  /**
   * Re-plans the current attempt of `round` without `peerIds` (members whose commitment failed a check),
   * before its all-reduce starts. Returns false when the attempt is not the current one or none of them is in it.
   */
  dropFromAttempt(round: number, attempt: number, peerIds: readonly string[], reason: string): boolean {
    this.tick();
    const a = this.#attempt;
    if (round !== this.#round || !a || a.attempt !== attempt || !a.ring.some((m) => peerIds.includes(m.peerId))) return false;
    this.#replan(a, peerIds, reason);
    return true;
  }

  /** The ring of the current attempt of `round` (undefined when there is none). */
  ringOf(round: number, attempt: number): RingMember[] | undefined {
    const a = this.#attempt;
    return round === this.#round && a && a.attempt === attempt ? a.ring.map((m) => ({ ...m })) : undefined;
  }

  /**
   * Advances time-driven state: fixes the plan once the planning deadline passed (and enough members are
   * present), and handles an attempt whose report deadline passed. Every other method calls it first.
   */
  tick(): this {
    const now = this.#now();
    if (!this.#attempt) {
      if (now >= this.planDeadlineMs) this.#fix(now);
      return this;
    }
    const a = this.#attempt;
    if (now > a.deadlineMs) {
      if (a.hashes.size > 0) {
        this.#decide(a);
      } else {
        const silent = a.ring.map((m) => m.peerId);
        this.#replan(a, silent, 'deadline');
      }
    }
    return this;
  }

  /** The current plan as `peerId` sees it, for `round` (0: the current round). */
  getPlan(peerId: string, round = 0): PlanView {
    this.tick();
    const r = round === 0 ? this.#round : round;
    if (r > this.#round) return { status: 'pending', round: r, retryAfterMs: this.retryAfterMs };
    const a = this.#attempt;
    if (r < this.#round) return { status: 'not-member', round: r, attempt: 0 };
    if (!a) {
      const wait = this.planDeadlineMs - this.#now();
      return { status: 'pending', round: r, retryAfterMs: wait > 0 ? Math.min(wait, this.retryAfterMs) : this.retryAfterMs };
    }
    const me = a.ring.find((m) => m.peerId === peerId);
    if (!me) return { status: 'not-member', round: r, attempt: a.attempt };
    return {
      status: 'ready',
      id: { round: r, attempt: a.attempt },
      ring: a.ring.map((m) => ({ ...m })),
      rank: me.rank,
      secret: Buffer.from(a.secret),
      deadlineMs: a.deadlineMs,
      thetaSha256: this.#theta,
    };
  }

  /**
   * A member's all-reduce of (round, attempt) failed, and it names the peers it suspects (may be empty).
   * Re-plans with attempt + 1 without them, or abandons the round when the attempts or members run out.
   */
  reportFailure(peerId: string, round: number, attempt: number, suspectPeerIds: readonly string[] = []): ReportResult {
    const a = this.#reportable(peerId, round, attempt);
    if ('verdict' in a) return a;
    this.#replan(a, suspectPeerIds, `failure reported by ${peerId}`);
    return { verdict: 'replan' };
  }

  /** A member's θ hash after round `round` (attempt: the plan it ran; default the current one). */
  reportHash(peerId: string, round: number, hash: string, attempt = this.tick().attempt): ReportResult {
    if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `theta hash ${JSON.stringify(hash)} is not 64 lowercase hex digits`, 'bad-hash');
    }
    const a = this.#reportable(peerId, round, attempt);
    if ('verdict' in a) return a;
    const prev = a.hashes.get(peerId);
    if (prev !== undefined && prev !== hash) {
      throw new RpcError(grpc.status.FAILED_PRECONDITION, `peer ${peerId} already reported another hash for round ${round} attempt ${attempt}`, 'conflicting-report');
    }
    a.hashes.set(peerId, hash);
    if (a.hashes.size < a.ring.length) return { verdict: 'accepted' };
    const decision = this.#decide(a);
    return { verdict: decision.verdicts.get(peerId) ?? 'resync', decision };
  }

  // -------------------------------------------------------------------------------------------------------

  /** The attempt a report is about, or the verdict for a stale one; refuses reports it must not take. */
  #reportable(peerId: string, round: number, attempt: number): Attempt | ReportResult {
    this.tick();
    const last = this.#lastDecision;
    if (round < this.#round) {
      const v = last && last.round === round ? last.verdicts.get(peerId) : undefined;
      if (v) return { verdict: v };
      throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} has no verdict for round ${round} (not in it, or the round is closed)`, 'not-in-round');
    }
    if (round > this.#round) throw new RpcError(grpc.status.FAILED_PRECONDITION, `round ${round} is not open (current round ${this.#round})`, 'round-not-open');
    const a = this.#attempt;
    if (!a) throw new RpcError(grpc.status.FAILED_PRECONDITION, `round ${round} has no plan yet`, 'plan-pending');
    if (attempt > a.attempt || attempt < 0 || !Number.isInteger(attempt)) {
      throw new RpcError(grpc.status.FAILED_PRECONDITION, `round ${round} has no attempt ${attempt} (current ${a.attempt})`, 'bad-attempt');
    }
    if (!a.ring.some((m) => m.peerId === peerId)) {
      throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} is not a member of round ${round} attempt ${a.attempt}`, 'not-in-round');
    }
    if (attempt < a.attempt) return { verdict: 'replan' };
    return a;
  }

  #present(): Map<string, PlannerMember> {
    const out = new Map<string, PlannerMember>();
    for (const m of this.#members()) {
      if (this.#resyncing.has(m.peerId) && this.#theta !== '' && m.info?.thetaSha256 === this.#theta) this.#resyncing.delete(m.peerId);
      const until = this.#excludedUntil.get(m.peerId);
      if (until !== undefined && until <= this.#round) this.#excludedUntil.delete(m.peerId);
      if (!this.#resyncing.has(m.peerId) && !(until !== undefined && until > this.#round)) out.set(m.peerId, m);
    }
    return out;
  }

  #makeAttempt(attempt: number, members: readonly PlannerMember[], now: number): Attempt {
    const byId = new Map(members.map((m) => [m.peerId, m]));
    const order = ringOrder(this.seed, this.#round, attempt, [...byId.keys()]);
    const ring = order.map((peerId, rank) => ({ peerId, address: byId.get(peerId)!.address, rank }));
    const secret = this.#random(32);
    if (!Buffer.isBuffer(secret) || secret.length !== 32) throw new RangeError(invalidParameter('randomBytes(32)', '32 bytes', secret));
    return { attempt, ring, secret: Buffer.from(secret), fixedAtMs: now, deadlineMs: now + this.roundDeadlineMs, hashes: new Map() };
  }

  #fix(now: number): void {
    const present = [...this.#present().values()];
    if (present.length < this.minMembers) return; // the round waits
    this.#attempt = this.#makeAttempt(0, present, now);
    this.#onEvent?.({ type: 'plan', round: this.#round, attempt: 0, ring: this.#attempt.ring });
  }

  #replan(a: Attempt, remove: readonly string[], reason: string): void {
    const present = this.#present();
    const gone = new Set(remove);
    const survivors: PlannerMember[] = [];
    const removed: string[] = [];
    for (const m of a.ring) {
      const p = present.get(m.peerId);
      if (gone.has(m.peerId) || !p) removed.push(m.peerId);
      else survivors.push(p);
    }
    const next = a.attempt + 1;
    if (next >= this.maxAttempts) return this.#abandon(a, `${reason}; ${this.maxAttempts} attempts used`);
    if (survivors.length < this.minMembers) return this.#abandon(a, `${reason}; ${survivors.length} survivors < minMembers ${this.minMembers}`);
    this.#attempt = this.#makeAttempt(next, survivors, this.#now());
    this.#onEvent?.({ type: 'replan', round: this.#round, attempt: next, ring: this.#attempt.ring, removed, reason });
  }

  #abandon(a: Attempt, reason: string): void {
    this.#onEvent?.({ type: 'abandon', round: this.#round, attempt: a.attempt, reason });
    this.#open(this.#round + 1);
  }

  #open(round: number): void {
    this.#round = round;
    this.#attempt = undefined;
    this.#openedAtMs = this.#now();
  }

  #decide(a: Attempt): Decision {
    const counts = new Map<string, number>();
    for (const h of a.hashes.values()) counts.set(h, (counts.get(h) ?? 0) + 1);
    let best = '';
    let bestCount = 0;
    for (const [h, c] of counts) if (c > bestCount || (c === bestCount && h < best)) [best, bestCount] = [h, c];
    const committed = bestCount * 2 > a.ring.length;
    const verdicts = new Map<string, PeerVerdict>();
    for (const [peer, h] of a.hashes) verdicts.set(peer, committed && h === best ? 'committed' : 'resync');
    for (const [peer, v] of verdicts) if (v === 'resync') this.#resyncing.add(peer);
    const decision: Decision = { round: this.#round, attempt: a.attempt, committed, thetaSha256: committed ? best : '', verdicts };
    this.#lastDecision = decision;
    if (committed) {
      this.#committedRound = this.#round;
      this.#theta = best;
      this.#onEvent?.({ type: 'commit', round: this.#round, attempt: a.attempt, thetaSha256: best, verdicts });
      this.#open(this.#round + 1);
    } else {
      this.#abandon(a, `no hash held by a majority of the ${a.ring.length} members`);
    }
    return decision;
  }
}

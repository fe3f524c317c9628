// The coordinator's book of commitments. Before an attempt's all-reduce starts, every member commits to its
// compressed Δ (Merkle root, norm, tokens, loss, signed). The ring may start (GO) only when all of the
// attempt's members have committed, so nobody learns another's Δ first. Checks at commit time:
// - tokens must be what the run config makes a round (H × B × T): a member cannot claim more work;
// - a root the member already committed in an earlier round is a replayed Δ;
// - once all are in, norms far from the attempt's median (above normFactor × median, or below
//   median / normFactor: a scaled-up or an empty Δ) fail their members;
// - its scales, sent before (PushScales), must hash to the committed SHA-256 and give the committed bound U
//   exactly, and the claimed norm must lie between the floor L and U they prove (src/trust/scale-bound.ts).
// Once all are in, the attempt's clip bound is clipFactor × the median U (rings of three or more): GO
// carries it, and every member feeds min(1, bound / U) × its Δ into the ring. Scale failures are proofs,
// found before any Δ byte moves.
// A member that fails is refused (it sits out the round), excluded for penaltyRounds, and the attempt is
// re-planned without it before any byte of Δ has moved.
import * as grpc from '@grpc/grpc-js';
import { SignedRecord, signedRecord } from '../ledger/entry';
import { Logger } from '../log';
import { CommitRequest, CommitResponse, PushScalesRequest, PushScalesResponse, RingMember } from '../swarm/proto';
import { RoundPlanner } from '../swarm/round-planner';
import { RpcError } from '../swarm/rpc-error';
import { checkScales } from './scale-bound';

export const COMMIT_METHOD = '/covenant.v1.Coordinator/Commit';

export interface Commitment {
  peerId: string;
  round: number;
  attempt: number;
  merkleRoot: string;
  deltaNorm: number;
  tokens: number;
  meanLoss: number;
  numBlocks: number;
  scalesSha256: string;
  scaleNorm: number;
  /** The scales it sent (not part of the signed record: the record holds their SHA-256). */
  scales: Float32Array;
  record: SignedRecord;
}

export interface CommitmentBookOptions {
  planner: RoundPlanner;
  /** Blocks of a Δ: ceil(numParams / blockSize). */
  numBlocks: number;
  numParams: number;
  blockSize: number;
  /** Tokens of one member's round: innerSteps × batchSize × seqLen. */
  tokensPerRound: number;
  normFactor: number;
  /** The clip bound is clipFactor × the attempt's median scale bound U (0: no clipping). */
  clipFactor: number;
  penaltyRounds: number;
  logger: Logger;
  /** Called for every member failed at commit time (for the ledger and metrics). */
  onFailed?: (peerId: string, round: number, reason: string) => void;
}

const HEX64 = /^[0-9a-f]{64}$/;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export class CommitmentBook {
  readonly #o: CommitmentBookOptions;
  /** `${round}/${attempt}` → peer → commitment. */
  readonly #byAttempt = new Map<string, Map<string, Commitment>>();
  /** Refusals by `${round}/${peerId}`. */
  readonly #refused = new Map<string, string>();
  /** Roots each peer committed, with their round (kept for the last rounds only). */
  readonly #roots = new Map<string, Map<string, number>>();
  /** Scales by `${round}/${peerId}` (the same Δ for every attempt of a round), with how many blocks arrived. */
  readonly #scales = new Map<string, { scales: Float32Array; received: number }>();
  /** Attempts whose norms were judged, with their clip bound (0: none). */
  readonly #judged = new Map<string, number>();

  constructor(o: CommitmentBookOptions) {
    this.#o = o;
  }

  /** The commitment `peerId` made for the attempt of `round` that ran (the latest it committed to). */
  get(round: number, peerId: string): Commitment | undefined {
    let best: Commitment | undefined;
    for (const [key, m] of this.#byAttempt) {
      if (Number(key.split('/')[0]) !== round) continue;
      const c = m.get(peerId);
      if (c && (!best || c.attempt > best.attempt)) best = c;
    }
    return best;
  }

  /** The clip bound of an attempt whose commitments are all in (0: none or not yet known). */
  clipOf(round: number, attempt: number): number {
    return this.#judged.get(`${round}/${attempt}`) ?? 0;
  }

  /** Every member refused in `round`, with the reason. */
  refusedIn(round: number): Map<string, string> {
    const out = new Map<string, string>();
    for (const [key, reason] of this.#refused) {
      const [r, peer] = key.split('/');
      if (Number(r) === round) out.set(peer, reason);
    }
    return out;
  }

  /** Why `peerId` was refused in `round`, if it was. */
  refusal(round: number, peerId: string): string | undefined {
    return this.#refused.get(`${round}/${peerId}`);
  }

  receiveScales(peerId: string, req: PushScalesRequest): PushScalesResponse {
    if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'PushScales needs the collective id of the plan', 'no-collective-id');
    const { round, attempt } = req.id;
    const ring = this.#o.planner.ringOf(round, attempt);
    if (!ring) return { accepted: false }; // another attempt is current: its Commit answers REPLAN
    if (!ring.some((m) => m.peerId === peerId)) {
      throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} is not a member of round ${round} attempt ${attempt}`, 'not-in-round');
    }
    const b = req.scales ?? Buffer.alloc(0);
    const key = `${round}/${peerId}`;
    const offset = req.offset ?? 0;
    // Chunks come in order; a chunk at 0 starts over (a retry, or another attempt of the round).
    let entry = this.#scales.get(key);
    if (!entry || offset === 0) this.#scales.set(key, (entry = { scales: new Float32Array(this.#o.numBlocks), received: 0 }));
    const n = b.length / 4;
    if (offset !== entry.received) throw new RpcError(grpc.status.INVALID_ARGUMENT, `scales chunk at block ${offset}, expected ${entry.received}`, 'bad-offset');
    if (b.length % 4 !== 0 || n === 0 || offset + n > this.#o.numBlocks) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `a scales chunk of ${b.length} bytes at block ${offset} does not fit ${this.#o.numBlocks} blocks of 4 bytes`, 'bad-scales');
    }
    const chunk = new Float32Array(n);
    Buffer.from(chunk.buffer).set(b);
    for (let i = 0; i < n; i++) {
      if (!(Number.isFinite(chunk[i]) && chunk[i] >= 0)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `scale ${offset + i} is ${chunk[i]}, not a finite non-negative number`, 'bad-scales');
    }
    entry.scales.set(chunk, offset);
    entry.received += n;
    return { accepted: true };
  }

  commit(peerId: string, req: CommitRequest): CommitResponse {
    const planner = this.#o.planner;
    if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'Commit needs the collective id of the plan', 'no-collective-id');
    const { round, attempt } = req.id;
    const wait = (missing: number[] = []): CommitResponse => ({ status: 'COMMIT_STATUS_WAIT', retryAfterMs: 100, missingRanks: missing, reason: '', clipNorm: 0 });
    const replan: CommitResponse = { status: 'COMMIT_STATUS_REPLAN', retryAfterMs: 0, missingRanks: [], reason: '', clipNorm: 0 };
    const refuse = (reason: string): CommitResponse => ({ status: 'COMMIT_STATUS_REFUSED', retryAfterMs: 0, missingRanks: [], reason, clipNorm: 0 });
    const refused = this.#refused.get(`${round}/${peerId}`);
    if (refused) return refuse(refused);
    const ring = planner.ringOf(round, attempt);
    if (!ring) return replan; // another attempt (or round) is current: the plan says which
    if (!ring.some((m) => m.peerId === peerId)) {
      throw new RpcError(grpc.status.PERMISSION_DENIED, `peer ${peerId} is not a member of round ${round} attempt ${attempt}`, 'not-in-round');
    }
    if (!HEX64.test(req.merkleRoot)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `merkle_root ${JSON.stringify(req.merkleRoot)} is not 64 lowercase hex digits`, 'bad-root');
    if (!Number.isFinite(req.deltaNorm) || req.deltaNorm < 0) throw new RpcError(grpc.status.INVALID_ARGUMENT, `delta_norm ${req.deltaNorm} is not a finite non-negative number`, 'bad-norm');
    if (req.numBlocks !== this.#o.numBlocks) throw new RpcError(grpc.status.INVALID_ARGUMENT, `num_blocks ${req.numBlocks} is not the run's ${this.#o.numBlocks}`, 'bad-blocks');
    if (!HEX64.test(req.scalesSha256 ?? '')) throw new RpcError(grpc.status.INVALID_ARGUMENT, `scales_sha256 ${JSON.stringify(req.scalesSha256)} is not 64 lowercase hex digits`, 'bad-scales');
    if (!Number.isFinite(req.scaleNorm) || req.scaleNorm < 0) throw new RpcError(grpc.status.INVALID_ARGUMENT, `scale_norm ${req.scaleNorm} is not a finite non-negative number`, 'bad-norm');
    const key = `${round}/${attempt}`;
    let book = this.#byAttempt.get(key);
    if (!book) this.#byAttempt.set(key, (book = new Map()));
    const prev = book.get(peerId);
    if (prev && prev.merkleRoot !== req.merkleRoot) {
      throw new RpcError(grpc.status.FAILED_PRECONDITION, `peer ${peerId} already committed another root for round ${round} attempt ${attempt}`, 'conflicting-commitment');
    }
    const sent = this.#scales.get(`${round}/${peerId}`);
    if (!sent || sent.received !== this.#o.numBlocks) {
      throw new RpcError(grpc.status.FAILED_PRECONDITION, `peer ${peerId} sent ${sent?.received ?? 0} of ${this.#o.numBlocks} scales for round ${round}: PushScales comes before Commit`, 'scales-missing');
    }
    const scales = sent.scales;
    if (!prev) {
      const fail = this.#check(peerId, req, round, scales);
      if (fail) {
        this.#fail(peerId, round, attempt, fail);
        return refuse(fail);
      }
      book.set(peerId, {
        peerId,
        round,
        attempt,
        merkleRoot: req.merkleRoot,
        deltaNorm: req.deltaNorm,
        tokens: req.tokens,
        meanLoss: req.meanLoss,
        numBlocks: req.numBlocks,
        scalesSha256: req.scalesSha256,
        scaleNorm: req.scaleNorm,
        scales,
        record: signedRecord(COMMIT_METHOD, req),
      });
      this.#forget(round);
    }
    const missing = ring.filter((m) => !book!.has(m.peerId)).map((m) => m.rank);
    if (missing.length > 0) return wait(missing);
    if (!this.#judged.has(key)) {
      const kept = this.#judgeNorms(ring, book, round, attempt);
      const f = this.#o.clipFactor;
      this.#judged.set(key, f > 0 && kept.length >= 3 ? f * median(kept.map((p) => book!.get(p)!.scaleNorm)) : 0);
      const mine = this.#refused.get(`${round}/${peerId}`);
      if (mine) return refuse(mine);
    }
    return planner.ringOf(round, attempt) ? { status: 'COMMIT_STATUS_GO', retryAfterMs: 0, missingRanks: [], reason: '', clipNorm: this.#judged.get(key)! } : replan;
  }

  #check(peerId: string, req: CommitRequest, round: number, scales: Float32Array): string | undefined {
    if (req.tokens !== this.#o.tokensPerRound) return `claims ${req.tokens} tokens; a round is ${this.#o.tokensPerRound}`;
    const seen = this.#roots.get(peerId)?.get(req.merkleRoot);
    if (seen !== undefined && seen < round) return `replayed-delta: the same Δ (root ${req.merkleRoot.slice(0, 16)}…) as in round ${seen}`;
    if (req.deltaNorm > req.scaleNorm * (1 + 1e-9)) return `norm-claim: Δ norm ${req.deltaNorm.toPrecision(6)} above the ${req.scaleNorm.toPrecision(6)} its own scale bound allows`;
    const why = checkScales(req, scales, this.#o.numParams, this.#o.blockSize);
    if (why) return `scale-proof: ${why}`;
    return undefined;
  }

  /** Fails the norm outliers; returns the members kept. */
  #judgeNorms(ring: RingMember[], book: Map<string, Commitment>, round: number, attempt: number): string[] {
    if (ring.length < 3) return ring.map((m) => m.peerId); // a median of fewer than three says nothing about who is off
    const norms = ring.map((m) => book.get(m.peerId)!.deltaNorm);
    const med = median(norms);
    const f = this.#o.normFactor;
    const out: string[] = [];
    for (const m of ring) {
      const n = book.get(m.peerId)!.deltaNorm;
      if (n > f * med || n < med / f) {
        const reason = `norm-outlier: Δ norm ${n.toPrecision(4)} against the round's median ${med.toPrecision(4)} (bound ×${f})`;
        out.push(m.peerId);
        this.#fail(m.peerId, round, attempt, reason, false);
      }
    }
    if (out.length > 0) this.#o.planner.dropFromAttempt(round, attempt, out, 'norm outliers at commit');
    return ring.map((m) => m.peerId).filter((p) => !out.includes(p));
  }

  #fail(peerId: string, round: number, attempt: number, reason: string, replan = true): void {
    this.#refused.set(`${round}/${peerId}`, reason);
    this.#o.planner.exclude(peerId, round + 1 + this.#o.penaltyRounds);
    this.#o.logger.warn('trust.commit-refused', { peerId, round, attempt, reason, excludedUntilRound: round + 1 + this.#o.penaltyRounds });
    this.#o.onFailed?.(peerId, round, reason);
    if (replan) this.#o.planner.dropFromAttempt(round, attempt, [peerId], 'commitment refused');
  }

  /** Records the roots of `round` and drops what is older than a few rounds. */
  #forget(round: number): void {
    for (const key of [...this.#byAttempt.keys()]) {
      if (Number(key.split('/')[0]) < round - 16) {
        this.#byAttempt.delete(key);
        this.#judged.delete(key);
      }
    }
    for (const [key] of this.#refused) if (Number(key.split('/')[0]) < round - 16) this.#refused.delete(key);
    for (const [key] of this.#scales) if (Number(key.split('/')[0]) < round - 16) this.#scales.delete(key);
    for (const m of this.#byAttempt.values()) {
      for (const c of m.values()) {
        let roots = this.#roots.get(c.peerId);
        if (!roots) this.#roots.set(c.peerId, (roots = new Map()));
        if (!roots.has(c.merkleRoot)) roots.set(c.merkleRoot, c.round);
      }
    }
    for (const roots of this.#roots.values()) for (const [r, rd] of roots) if (rd < round - 64) roots.delete(r);
  }
}

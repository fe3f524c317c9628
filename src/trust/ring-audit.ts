// Openings: after a round commits, every member of the committing ring opens a sample of blocks of its
// committed Δ (block + Merkle path, checked against its commitment's root). The validator then recomputes
// the ring's exact int8 reduction of those blocks — the order is known (chunk c starts at rank c and is summed
// rank after rank to its owner, rank c − 1) and the arithmetic deterministic (the same quantize and dequantize
// kernels, fp32 additions, one fp32 division by N) — and compares it bit for bit with the agreed average.
// A mismatch means the ring carried data that does not follow from the commitments: the round fails.
// Every member also opens what it sent at each step that carried those blocks, against the transcript root
// it signed in its report; ring-blame.ts then names the member whose step departs from the arithmetic.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { Logger } from '../log';
import { PushOpeningsRequest, PushOpeningsResponse, ReportRoundRequest } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { CommitmentBook } from './commitments';
import { verifyMerklePath } from './merkle';
import { blameBlock, decodeBlock, quantizeBlock, ringHop } from './ring-blame';
import { chunkOf, ringLeafData, sentLeafCount, sentLeafIndex } from './ring-geometry';
import { applyClip, clipFactor } from './scale-bound';

export { chunkOf };

export interface RingAuditResult {
  ok: boolean;
  blocks: number[];
  /** Sampled blocks whose recomputed reduction differs from the agreed average. */
  mismatched: number[];
  /** Members whose ring traffic departs from their commitment (the first deviating step of a block). */
  blamed: Array<{ peerId: string; block: number; step: number; reason: string }>;
  /** Members whose opened blocks carry scales other than the ones they sent before the ring (PushScales). */
  scaleFailures?: Array<{ peerId: string; reason: string }>;
  /** Set when the audit could not run (a member did not open in time). */
  incomplete?: string;
}

interface RoundAudit {
  round: number;
  attempt: number;
  ring: string[];
  blocks: number[];
  opened: Map<string, Map<number, Buffer>>;
  /** Ring openings by member: `${step}/${index}` → what it says it sent, with its path. */
  ringOpened: Map<string, Map<string, { block: Buffer; path: Buffer[] }>>;
  update?: Float32Array;
  reports?: ReadonlyMap<string, ReportRoundRequest>;
  done: Promise<RingAuditResult>;
  settle: (r: RingAuditResult) => void;
  running: boolean;
}

export interface RingAuditOptions {
  book: CommitmentBook;
  numParams: number;
  blockSize: number;
  /** Blocks opened per round. */
  sample: number;
  timeoutMs: number;
  logger: Logger;
}

/** The blocks to open: `k` distinct indices drawn from SHA-256(θ hash | round | i), fixed only once the round committed. */
export function openingSample(thetaSha256: string, round: number, numBlocks: number, k: number): number[] {
  const out = new Set<number>();
  for (let i = 0; out.size < Math.min(k, numBlocks); i++) {
    out.add(crypto.createHash('sha256').update(`${thetaSha256}|${round}|open|${i}`).digest().readUIntBE(0, 6) % numBlocks);
  }
  return [...out].sort((a, b) => a - b);
}

/** Replays the int8 ring arithmetic for a block of chunk `c`: inputs[r] is rank r's values of the block. */
export async function reduceChunkBlock(inputs: Float32Array[], c: number, blockSize: number): Promise<Float32Array> {
  const N = inputs.length;
  if (N === 1) return Float32Array.from(inputs[0]);
  let q = await quantizeBlock(inputs[c], blockSize); // rank c sends its own values, quantized
  for (let j = 1; j < N; j++) q = await ringHop(q, inputs[(c + j) % N], j === N - 1 ? N : 1, blockSize); // the owner divides
  return decodeBlock(q, blockSize);
}

export class RingAudit {
  readonly #o: RingAuditOptions;
  readonly #rounds = new Map<number, RoundAudit>();

  constructor(o: RingAuditOptions) {
    this.#o = o;
  }

  get numBlocks(): number {
    return Math.ceil(this.#o.numParams / this.#o.blockSize);
  }

  /** A round committed with this ring (peer ids in rank order). */
  begin(round: number, attempt: number, ring: string[], thetaSha256: string): void {
    let settle: (r: RingAuditResult) => void = () => undefined;
    const done = new Promise<RingAuditResult>((resolve) => (settle = resolve));
    const blocks = openingSample(thetaSha256, round, this.numBlocks, this.#o.sample);
    const a: RoundAudit = { round, attempt, ring: [...ring], blocks, opened: new Map(), ringOpened: new Map(), done, settle, running: false };
    this.#rounds.set(round, a);
    for (const k of this.#rounds.keys()) if (k < round - 8) this.#rounds.delete(k);
    const timer = setTimeout(() => {
      const missing = a.ring.filter((p) => !a.opened.has(p));
      a.settle({ ok: false, blocks, mismatched: [], blamed: [], incomplete: missing.length ? `no openings from ${missing.join(', ')}` : 'no averaged update' });
    }, this.#o.timeoutMs);
    timer.unref();
    void done.then(() => clearTimeout(timer));
  }

  /** The blocks `peerId` should open for `round` (empty once it has, or when nothing is audited). */
  wants(peerId: string, round: number): number[] {
    const a = this.#rounds.get(round);
    return a && a.ring.includes(peerId) && !a.opened.has(peerId) ? [...a.blocks] : [];
  }

  receive(peerId: string, req: PushOpeningsRequest): PushOpeningsResponse {
    if (!req.id) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'PushOpenings needs the collective id of the committed round', 'no-collective-id');
    const a = this.#rounds.get(req.id.round);
    if (!a || !a.ring.includes(peerId)) throw new RpcError(grpc.status.FAILED_PRECONDITION, `no openings of round ${req.id.round} are wanted from ${peerId}`, 'openings-not-wanted');
    if (a.opened.has(peerId)) return { accepted: true };
    const c = this.#o.book.get(a.round, peerId);
    if (!c || c.attempt !== a.attempt) throw new RpcError(grpc.status.FAILED_PRECONDITION, `peer ${peerId} has no commitment for round ${a.round} attempt ${a.attempt}`, 'no-commitment');
    const got = new Map<number, Buffer>();
    for (const o of req.openings ?? []) {
      if (!a.blocks.includes(o.index)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `block ${o.index} was not asked for`, 'bad-opening');
      if (!verifyMerklePath(c.merkleRoot, o.block, o.index, this.numBlocks, o.path)) {
        throw new RpcError(grpc.status.INVALID_ARGUMENT, `block ${o.index} does not open against the committed root`, 'bad-opening');
      }
      got.set(o.index, Buffer.from(o.block));
    }
    if (got.size !== a.blocks.length) throw new RpcError(grpc.status.INVALID_ARGUMENT, `${got.size} of ${a.blocks.length} asked blocks opened`, 'bad-opening');
    // Ring openings are checked against the member's signed transcript root when the audit runs.
    const ring = new Map<string, { block: Buffer; path: Buffer[] }>();
    for (const o of req.ringOpenings ?? []) {
      if (!a.blocks.includes(o.index) || o.step >= 2 * (a.ring.length - 1)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `ring opening of block ${o.index} at step ${o.step} was not asked for`, 'bad-opening');
      ring.set(`${o.step}/${o.index}`, { block: Buffer.from(o.block), path: (o.path ?? []).map((p) => Buffer.from(p)) });
    }
    a.ringOpened.set(peerId, ring);
    a.opened.set(peerId, got);
    this.#maybeRun(a);
    return { accepted: true };
  }

  /** The agreed average of `round` (what the update upload carried) and the members' signed reports. */
  setUpdate(round: number, update: Float32Array, reports: ReadonlyMap<string, ReportRoundRequest>): void {
    const a = this.#rounds.get(round);
    if (!a) return;
    a.update = update;
    a.reports = reports;
    this.#maybeRun(a);
  }

  result(round: number): Promise<RingAuditResult | undefined> {
    return this.#rounds.get(round)?.done ?? Promise.resolve(undefined);
  }

  #maybeRun(a: RoundAudit): void {
    if (a.running || !a.update || a.ring.some((p) => !a.opened.has(p))) return;
    a.running = true;
    void this.#run(a).then(a.settle, (e: unknown) => a.settle({ ok: false, blocks: a.blocks, mismatched: [], blamed: [], incomplete: `audit error: ${(e as Error).message}` }));
  }

  async #run(a: RoundAudit): Promise<RingAuditResult> {
    const { blockSize, numParams } = this.#o;
    const N = a.ring.length;
    const numBlocks = this.numBlocks;
    const mismatched: number[] = [];
    const blamed: RingAuditResult['blamed'] = [];
    const roots = a.ring.map((p) => a.reports?.get(p));
    const hopOk = (r: number) => {
      const from = roots[r];
      const to = roots[(r + 1) % N];
      return !!from && !!to && from.transcriptSentSha256 !== '' && from.transcriptSentSha256 === to.transcriptReceivedSha256;
    };
    // What rank r sent at a step, if it opened it against the root in its report.
    const sent = (r: number, step: number, index: number): Buffer | undefined => {
      const o = a.ringOpened.get(a.ring[r])?.get(`${step}/${index}`);
      const root = roots[r]?.transcriptSentSha256;
      if (!o || !root) return undefined;
      const leaf = ringLeafData(step, index, o.block);
      return verifyMerklePath(root, leaf, sentLeafIndex(numBlocks, N, r, step, index), sentLeafCount(numBlocks, N, r), o.path) ? o.block : undefined;
    };
    // The scales (checked in full at commit time, they set the clip factor) bind the opened blocks too.
    const scaleFailures: Array<{ peerId: string; reason: string }> = [];
    const clip = this.#o.book.clipOf(a.round, a.attempt);
    const factors = a.ring.map((p) => {
      const c = this.#o.book.get(a.round, p)!;
      const bad = a.blocks.find((b) => a.opened.get(p)!.get(b)!.readFloatLE(0) !== c.scales[b]);
      if (bad !== undefined) scaleFailures.push({ peerId: p, reason: `scale-proof: block ${bad} opened with a scale other than the one it sent before the ring` });
      return clipFactor(c.scaleNorm, clip);
    });
    for (const b of a.blocks) {
      const len = Math.min(blockSize, numParams - b * blockSize);
      const inputs = await Promise.all(
        a.ring.map(async (p, r) => {
          const bytes = a.opened.get(p)!.get(b)!;
          if (bytes.length - 4 !== len) throw new Error(`block ${b} of ${p} holds ${bytes.length - 4} codes, not ${len}`);
          return applyClip(await decodeBlock(bytes, blockSize), factors[r]);
        }),
      );
      const c = chunkOf(b, numBlocks, N);
      const replayed = await reduceChunkBlock(inputs, c, blockSize);
      const agreed = a.update!.subarray(b * blockSize, b * blockSize + len);
      const same = Buffer.from(replayed.buffer, replayed.byteOffset, replayed.byteLength).equals(Buffer.from(agreed.buffer, agreed.byteOffset, agreed.byteLength));
      if (!same) mismatched.push(b);
      for (const x of await blameBlock({ N, chunk: c, blockSize, inputs, sent: (r, step) => sent(r, step, b), hopOk })) {
        blamed.push({ peerId: a.ring[x.rank], block: b, step: x.step, reason: x.reason });
      }
    }
    const r = { ok: mismatched.length === 0 && blamed.length === 0, blocks: a.blocks, mismatched, blamed, ...(scaleFailures.length ? { scaleFailures } : {}) };
    this.#o.logger[r.ok ? 'info' : 'warn'](r.ok ? 'trust.ring-audit' : 'trust.ring-mismatch', { round: a.round, blocks: a.blocks.length, mismatched, blamed, clip, clipped: factors.filter((f) => f < 1).length });
    for (const f of scaleFailures) this.#o.logger.warn('trust.scale-proof', { round: a.round, ...f });
    return r;
  }
}

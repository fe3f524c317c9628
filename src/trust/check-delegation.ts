// Useful-work checks handed to members with the validator role (run config `validators`). The coordinator
// queues one task per sampled member for one validator; the validator takes it with FetchCheck (the task,
// then the member's compressed Δ in chunks), measures the losses on its own engine and data, and sends the
// per-batch losses back with SubmitCheck. The coordinator derives the result from those numbers and judges it
// with the same rule as its own checks; the validator's signed submission goes into the ledger, so anyone can
// re-run the check (θ, Δ root and windows are all on record) and expose a validator that lied.
import * as grpc from '@grpc/grpc-js';
import { SignedRecord, signedRecord } from '../ledger/entry';
import { CheckChunk, STATE_CHUNK_BYTES, SubmitCheckRequest, SubmitCheckResponse } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { CheckLosses, UsefulWorkResult, usefulWorkFromLosses } from './useful-work';

export const SUBMIT_CHECK_METHOD = '/covenant.v1.Coordinator/SubmitCheck';

/** Highest loss (nats) a submission may carry: far above any real model's, below anything absurd. */
const MAX_LOSS = 1e4;

export type DelegatedOutcome =
  | { kind: 'measured'; validator: string; losses: CheckLosses; result: UsefulWorkResult; record: SignedRecord }
  | { kind: 'declined'; validator: string; reason: string };

export interface CheckAssignment {
  round: number;
  peerId: string;
  validator: string;
  prevThetaSha256: string;
  deltaSha256: string;
  /** The member's Δ payload (every scale, then every code), already checked against its commitment. */
  payload: Buffer;
  /** Batches per side the validator must evaluate. */
  batches: number;
}

interface Task extends CheckAssignment {
  taken: boolean;
  settle: (o: DelegatedOutcome) => void;
}

const key = (round: number, peerId: string) => `${round}|${peerId}`;

export class CheckDelegation {
  /** Open tasks in the order they were assigned. */
  readonly #tasks = new Map<string, Task>();

  /** Queues a check for its validator; resolves when the validator submits or declines, or the task is cancelled (declined). */
  assign(a: CheckAssignment): Promise<DelegatedOutcome> {
    this.cancel(a.round, a.peerId, 'replaced by a newer assignment');
    return new Promise((settle) => {
      this.#tasks.set(key(a.round, a.peerId), { ...a, taken: false, settle });
    });
  }

  /** Withdraws a task (its deadline passed): its promise resolves as declined with `reason`. */
  cancel(round: number, peerId: string, reason: string): void {
    const t = this.#tasks.get(key(round, peerId));
    if (!t) return;
    this.#tasks.delete(key(round, peerId));
    t.settle({ kind: 'declined', validator: t.validator, reason });
  }

  /** Tasks assigned to `validator` that it has not taken yet (the heartbeat's hint). */
  waiting(validator: string): number {
    let n = 0;
    for (const t of this.#tasks.values()) if (t.validator === validator && !t.taken) n++;
    return n;
  }

  /**
   * FetchCheck: the validator's oldest open task (one it took before and never answered comes again, so a
   * broken stream loses nothing), then its Δ in chunks. No open task: an empty stream.
   */
  async *fetch(validator: string, signal?: AbortSignal): AsyncGenerator<CheckChunk> {
    const open = [...this.#tasks.values()].filter((t) => t.validator === validator);
    const t = open.find((x) => !x.taken) ?? open[0];
    if (!t) return;
    t.taken = true;
    const task = { round: t.round, peerId: t.peerId, prevThetaSha256: t.prevThetaSha256, deltaSha256: t.deltaSha256, totalBytes: t.payload.length, batches: t.batches };
    for (let offset = 0; offset < t.payload.length || offset === 0; offset += STATE_CHUNK_BYTES) {
      if (signal?.aborted) return;
      yield { task: offset === 0 ? task : null, offset, data: t.payload.subarray(offset, offset + STATE_CHUNK_BYTES) };
      if (t.payload.length === 0) return;
    }
  }

  /** SubmitCheck from `validator`: the measured losses (or a refusal) for a task it holds. */
  submit(validator: string, req: SubmitCheckRequest): SubmitCheckResponse {
    const t = this.#tasks.get(key(req.round, req.peerId));
    // Timed out, withdrawn or someone else's: nothing to do (not an error: the validator may just be late).
    if (!t || t.validator !== validator) return { accepted: false };
    if (req.deltaSha256 !== t.deltaSha256 || req.prevThetaSha256 !== t.prevThetaSha256) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `the check names Δ ${req.deltaSha256.slice(0, 16)}… on θ ${req.prevThetaSha256.slice(0, 16)}…, the task Δ ${t.deltaSha256.slice(0, 16)}… on θ ${t.prevThetaSha256.slice(0, 16)}…`, 'check-mismatch');
    }
    if (req.declined) {
      this.#tasks.delete(key(t.round, t.peerId));
      t.settle({ kind: 'declined', validator, reason: req.reason.slice(0, 200) || 'no reason given' });
      return { accepted: true };
    }
    const losses: CheckLosses = { assignedBefore: req.assignedBefore, assignedAfter: req.assignedAfter, controlBefore: req.controlBefore, controlAfter: req.controlAfter };
    for (const [name, xs] of Object.entries(losses) as Array<[string, number[]]>) {
      if (xs.length !== t.batches) throw new RpcError(grpc.status.INVALID_ARGUMENT, `${name} holds ${xs.length} losses, the check has ${t.batches} batches`, 'bad-check');
      const bad = xs.findIndex((x) => !Number.isFinite(x) || x < 0 || x > MAX_LOSS);
      if (bad >= 0) throw new RpcError(grpc.status.INVALID_ARGUMENT, `${name}[${bad}] = ${xs[bad]} is not a loss in [0, ${MAX_LOSS}]`, 'bad-check');
    }
    this.#tasks.delete(key(t.round, t.peerId));
    t.settle({ kind: 'measured', validator, losses, result: usefulWorkFromLosses(losses), record: signedRecord(SUBMIT_CHECK_METHOD, req) });
    return { accepted: true };
  }

  /** Withdraws every task (the coordinator is stopping). */
  close(): void {
    for (const t of [...this.#tasks.values()]) this.cancel(t.round, t.peerId, 'the coordinator is stopping');
  }
}

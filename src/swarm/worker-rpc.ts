// The worker's calls to the coordinator that need more than one request: retrying through a coordinator
// outage (restart, network blip) with capped exponential backoff, and the chunked PushUpdate upload.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { SignedClient } from './grpc-client';
import { CollectiveId, CoordinatorMethods, STATE_CHUNK_BYTES } from './proto';
import { RpcError } from './rpc-error';

/** Failures that a later try may not see: the coordinator is down, restarting, or slow. */
export function isTransient(e: unknown): boolean {
  if (!(e instanceof RpcError)) return false;
  return e.status === grpc.status.UNAVAILABLE || e.status === grpc.status.DEADLINE_EXCEEDED || e.status === grpc.status.RESOURCE_EXHAUSTED || e.status === grpc.status.ABORTED;
}

export class StoppedError extends Error {
  constructor() {
    super('the worker is stopping');
  }
}

/** Resolves after `ms`, or rejects with StoppedError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new StoppedError());
    const onAbort = () => {
      clearTimeout(t);
      reject(new StoppedError());
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryOptions {
  signal?: AbortSignal;
  /** First wait, doubled after each failure up to maxDelayMs (defaults 200 and 5000). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each wait with the failure and the attempt number. */
  onRetry?: (e: unknown, attempt: number, delayMs: number) => void;
  /** Which failures to retry (default isTransient). */
  retryable?: (e: unknown) => boolean;
}

/** Runs `fn` until it succeeds, a failure is not retryable, or the signal aborts (StoppedError). */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  let delay = opts.initialDelayMs ?? 200;
  const max = opts.maxDelayMs ?? 5000;
  const retryable = opts.retryable ?? isTransient;
  for (let attempt = 1; ; attempt++) {
    if (opts.signal?.aborted) throw new StoppedError();
    try {
      return await fn();
    } catch (e) {
      if (!retryable(e) || opts.signal?.aborted) throw e;
      opts.onRetry?.(e, attempt, delay);
      await sleep(delay, opts.signal);
      delay = Math.min(max, delay * 2);
    }
  }
}

/** Sends a committed round's averaged pseudo-gradient to the coordinator; resolves with the coordinator's saved state round. */
export function pushUpdate(client: SignedClient<CoordinatorMethods>, id: CollectiveId, update: Float32Array, signal?: AbortSignal): Promise<number> {
  return pushChunks(client, 'pushUpdate', id, Buffer.from(update.buffer, update.byteOffset, update.byteLength), signal);
}

/** Sends `payload` in STATE_CHUNK_BYTES chunks with its SHA-256 (PushUpdate, PushDelta); resolves once the coordinator has taken it. */
export async function pushChunks(client: SignedClient<CoordinatorMethods>, method: 'pushUpdate' | 'pushDelta', id: CollectiveId, payload: Buffer, signal?: AbortSignal): Promise<number> {
  const sha256 = crypto.createHash('sha256').update(payload).digest('hex');
  let stateRound = 0;
  for (let offset = 0; offset < payload.length || offset === 0; offset += STATE_CHUNK_BYTES) {
    const data = payload.subarray(offset, Math.min(payload.length, offset + STATE_CHUNK_BYTES));
    const res = await client.call(method, { id, offset, totalBytes: payload.length, sha256, data }, { signal, deadlineMs: 60_000 });
    stateRound = res.stateRound;
    if (res.applied) return stateRound;
    if (payload.length === 0) break;
  }
  throw new RpcError(grpc.status.INTERNAL, `the coordinator took all ${payload.length} bytes of round ${id.round}'s ${method} but did not apply it`, 'upload-not-applied');
}

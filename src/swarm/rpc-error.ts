// One error type for the control plane, both sides: a server handler throws an RpcError with a gRPC status
// and a stable reason; the wrapper sends them as the status and the `covenant-reason` trailer; a client gets
// an RpcError back with the same status and reason, and the caller's stack.
import * as grpc from '@grpc/grpc-js';
import { CovenantError } from '../errors';

/** Trailing-metadata key that carries the stable reason of a refusal (e.g. 'stale'). */
export const REASON_METADATA_KEY = 'covenant-reason';

/** Stable reasons of the refusals the protocol layer makes; handlers may add their own. */
export type RefusalReason =
  | 'run-mismatch'
  | 'protocol-mismatch'
  | 'no-meta'
  | 'no-signature'
  | 'bad-public-key'
  | 'peer-id-mismatch'
  | 'bad-nonce'
  | 'bad-signature'
  | 'stale'
  | 'replayed'
  | 'replay-cache-full';

/** The name of a gRPC status code ('FAILED_PRECONDITION'), or the number when it has none. */
export function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? String(code);
}

/**
 * A control-plane failure. `status` is the gRPC code, `reason` a stable kebab-case word that callers may
 * switch on ('' when the peer sent none), `details` the text for people. `code` (from CovenantError) is
 * `RPC_<STATUS NAME>`, e.g. RPC_UNAUTHENTICATED.
 */
export class RpcError extends CovenantError {
  readonly status: grpc.status;
  readonly reason: string;
  readonly details: string;

  constructor(status: grpc.status, details: string, reason = '', options?: { message?: string; cause?: unknown }) {
    super(`RPC_${statusName(status)}`, options?.message ?? `${statusName(status)}: ${details}`, { cause: options?.cause });
    this.status = status;
    this.reason = reason;
    this.details = details;
  }
}

/** What a grpc-js server callback (or `call.emit('error')`) takes: the status, details and trailers. */
export function toServiceError(e: unknown, method: string): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (e instanceof RpcError) {
    if (e.reason) metadata.set(REASON_METADATA_KEY, e.reason);
    return { code: e.status, details: e.details, metadata };
  }
  // A handler bug or an unexpected failure: INTERNAL, with the message (the server's own text) for diagnosis.
  const message = e instanceof Error ? e.message : String(e);
  return { code: grpc.status.INTERNAL, details: `${method} failed on the server: ${message}`, metadata };
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'number' && 'details' in e;
}

/**
 * The RpcError for a failed client call: "METHOD failed: STATUS: details", the reason from the trailers,
 * and the stack of `callSite` (an Error made where the caller started the call, before any await).
 */
export function fromServiceError(e: unknown, method: string, callSite: Error): RpcError {
  if (e instanceof RpcError) return e;
  let status = grpc.status.UNKNOWN;
  let details = e instanceof Error ? e.message : String(e);
  let reason = '';
  if (isServiceError(e)) {
    status = e.code;
    details = e.details;
    const r = e.metadata?.get(REASON_METADATA_KEY)[0];
    if (typeof r === 'string') reason = r;
  }
  const err = new RpcError(status, details, reason, { message: `${method} failed: ${statusName(status)}: ${details}`, cause: e });
  err.stack = `${err.name}: ${err.message}\n${(callSite.stack ?? '').split('\n').slice(1).join('\n')}`;
  return err;
}

// Signed requests. A client signs the canonical bytes of (method, run id, protocol version, peer id, public
// key, timestamp, nonce, body without meta) with its ed25519 key; a server's RequestVerifier checks run id,
// protocol version, key and peer id, signature, clock skew and nonce reuse before any handler runs.
//
// Canonical bytes = "covenant-signed-request/v1\n" followed by the UTF-8 of canonicalJson({ body, method,
// nonce, peerId, protocolVersion, publicKey, runId, timestampMs }), where `body` is the request as the
// receiver decodes it (every field present, proto-loader options of proto.ts) minus `meta`. Why JSON and
// not the serialized protobuf with the signature cleared: protobuf encoding is not canonical (field order,
// unknown fields and default values may differ between encoders, and grpc-js hands the server a decoded
// object, not the bytes), while this form is fixed by the schema alone, so any implementation can rebuild it.
import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'crypto';
import { invalidParameter } from '../train/model-config';
import { Identity, peerIdFromPublicKey, verifySignature } from './identity';
import { NONCE_BYTES, PROTOCOL_VERSION, PUBLIC_KEY_BYTES, RequestBody, RequestMeta } from './proto';
import { ReplayCache } from './replay-cache';
import { RefusalReason, RpcError } from './rpc-error';

/** Domain separation: these bytes are never valid as any other covenant signature. */
export const SIGNING_PREFIX = 'covenant-signed-request/v1\n';
/** How far a request's timestamp may be from the server's clock, either way. */
export const DEFAULT_MAX_SKEW_MS = 60_000;
/** Accepted nonces a server remembers at most (≈ 100 k requests per two minutes; about 10 MB). */
export const DEFAULT_MAX_NONCES = 100_000;

/**
 * The protocol's canonical JSON: object keys sorted (UTF-16 code units), no whitespace, undefined members
 * left out; strings and finite numbers as JSON.stringify writes them (ECMAScript shortest round-trip form,
 * −0 as 0); NaN and ±Infinity as the strings "NaN", "Infinity", "-Infinity" (proto3 JSON's spelling);
 * bytes (Uint8Array) as standard base64 with padding; null as null.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : JSON.stringify(String(value));
    case 'object': {
      if (value instanceof Uint8Array) return JSON.stringify(Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64'));
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
    }
    default:
      throw new TypeError(invalidParameter('a signed request field', 'null, a boolean, number, string, bytes, array or object', value));
  }
}

/** The meta fields that are signed (all but the signature). */
export type SignedMeta = Omit<RequestMeta, 'signature'>;

/** The bytes a request's signature covers. `body` is the decoded request without its `meta`. */
export function canonicalRequestBytes(method: string, meta: SignedMeta, body: object): Buffer {
  const content = {
    body,
    method,
    nonce: meta.nonce,
    peerId: meta.peerId,
    protocolVersion: meta.protocolVersion,
    publicKey: meta.publicKey,
    runId: meta.runId,
    timestampMs: meta.timestampMs,
  };
  return Buffer.from(SIGNING_PREFIX + canonicalJson(content), 'utf8');
}

/** The request without its meta: what the signature's `body` is. */
export function requestBody(request: object): Record<string, unknown> {
  const { meta: _meta, ...body } = request as Record<string, unknown>;
  return body;
}

/** Which run and protocol a client speaks for. */
export interface SigningContext {
  runId: string;
  /** Defaults to PROTOCOL_VERSION. */
  protocolVersion?: number;
}

/** Overrides for tests and tools; normal callers leave both out. */
export interface SignOptions {
  /** The timestamp to sign (default Date.now()). */
  timestampMs?: number;
  /** The nonce (default 16 fresh random bytes). */
  nonce?: Uint8Array;
}

/** What signing needs of a method: its path and request encoder/decoder (a grpc-js MethodDefinition has them). */
export type SignableMethod<Req> = Pick<grpc.MethodDefinition<Req, unknown>, 'path' | 'requestSerialize' | 'requestDeserialize'>;

/**
 * The request to send for `body` on `method`: body normalized through the method's encoder (exactly what
 * the server will decode) with a signed RequestMeta.
 */
export function signRequest<Req extends { meta: RequestMeta | null }>(
  identity: Identity,
  method: SignableMethod<Req>,
  body: RequestBody<Req>,
  context: SigningContext,
  options: SignOptions = {},
): Req {
  const meta: SignedMeta = {
    runId: context.runId,
    protocolVersion: context.protocolVersion ?? PROTOCOL_VERSION,
    peerId: identity.peerId,
    publicKey: identity.publicKey,
    timestampMs: options.timestampMs ?? Date.now(),
    nonce: Buffer.from(options.nonce ?? randomBytes(NONCE_BYTES)),
  };
  const draft = { ...(body as object), meta: { ...meta, signature: Buffer.alloc(0) } } as unknown as Req;
  const normalized = method.requestDeserialize(method.requestSerialize(draft));
  const sentMeta = normalized.meta as RequestMeta;
  const signature = identity.sign(canonicalRequestBytes(method.path, sentMeta, requestBody(normalized)));
  return { ...normalized, meta: { ...sentMeta, signature } };
}

/** Who sent a verified request. */
export interface VerifiedPeer {
  peerId: string;
  /** Raw 32-byte ed25519 public key. */
  publicKey: Buffer;
  timestampMs: number;
}

export interface VerifierOptions {
  runId: string;
  /** Defaults to PROTOCOL_VERSION. */
  protocolVersion?: number;
  /** Defaults to DEFAULT_MAX_SKEW_MS. */
  maxSkewMs?: number;
  /** Defaults to DEFAULT_MAX_NONCES. */
  maxNonces?: number;
  /** The server's clock (ms since the epoch); tests replace it. */
  now?: () => number;
}

function refuse(status: grpc.status, reason: RefusalReason, details: string): RpcError {
  return new RpcError(status, details, reason);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

function isMeta(x: unknown): x is RequestMeta {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  return (
    typeof m.runId === 'string' &&
    typeof m.protocolVersion === 'number' &&
    typeof m.peerId === 'string' &&
    m.publicKey instanceof Uint8Array &&
    typeof m.timestampMs === 'number' &&
    m.nonce instanceof Uint8Array &&
    m.signature instanceof Uint8Array
  );
}

/**
 * Server side: checks every request before its handler runs, and remembers accepted nonces. Refusals are
 * RpcErrors: FAILED_PRECONDITION for another run id or protocol version (both named), UNAUTHENTICATED for
 * anything about the proof (no meta or signature, bad key, peer id, nonce or signature, stale, replayed),
 * RESOURCE_EXHAUSTED when the nonce cache is full.
 */
export class RequestVerifier {
  readonly runId: string;
  readonly protocolVersion: number;
  readonly maxSkewMs: number;
  readonly #now: () => number;
  readonly #nonces: ReplayCache;

  constructor(options: VerifierOptions) {
    if (typeof options.runId !== 'string' || options.runId.length === 0) throw new TypeError(invalidParameter('runId', 'a non-empty string', options.runId));
    this.runId = options.runId;
    this.protocolVersion = options.protocolVersion ?? PROTOCOL_VERSION;
    this.maxSkewMs = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    if (!Number.isFinite(this.maxSkewMs) || this.maxSkewMs <= 0) throw new RangeError(invalidParameter('maxSkewMs', 'a positive number', this.maxSkewMs));
    this.#now = options.now ?? Date.now;
    this.#nonces = new ReplayCache(2 * this.maxSkewMs, options.maxNonces ?? DEFAULT_MAX_NONCES);
  }

  /** Accepted nonces currently remembered. */
  get rememberedNonces(): number {
    return this.#nonces.size;
  }

  /** Verifies `request` (decoded) for `method` (its path, '/covenant.v1.Coordinator/Join'); throws an RpcError. */
  verify(method: string, request: unknown): VerifiedPeer {
    const meta = typeof request === 'object' && request !== null ? (request as { meta?: unknown }).meta : undefined;
    if (!isMeta(meta)) {
      throw refuse(grpc.status.UNAUTHENTICATED, 'no-meta', `${method}: the request carries no RequestMeta; every request must be signed`);
    }
    // 1. Which run and protocol: a misdirected or outdated peer, not an attacker; say what would fix it.
    if (meta.runId !== this.runId) {
      throw refuse(
        grpc.status.FAILED_PRECONDITION,
        'run-mismatch',
        `${method}: the request is for run ${JSON.stringify(meta.runId)} but this server runs ${JSON.stringify(this.runId)}; ` +
          'point the worker at the coordinator of its run, or fix its run id',
      );
    }
    if (meta.protocolVersion !== this.protocolVersion) {
      throw refuse(
        grpc.status.FAILED_PRECONDITION,
        'protocol-mismatch',
        `${method}: the request speaks protocol version ${meta.protocolVersion} but this server speaks ${this.protocolVersion}; ` +
          'run the same covenant release on both sides',
      );
    }
    // 2. The proof: key, peer id, nonce and signature over the content.
    if (meta.signature.byteLength === 0) {
      throw refuse(grpc.status.UNAUTHENTICATED, 'no-signature', `${method}: the request is not signed`);
    }
    if (meta.publicKey.byteLength !== PUBLIC_KEY_BYTES) {
      throw refuse(
        grpc.status.UNAUTHENTICATED,
        'bad-public-key',
        `${method}: the public key has ${meta.publicKey.byteLength} bytes, expected a raw ed25519 key of ${PUBLIC_KEY_BYTES}`,
      );
    }
    const derived = peerIdFromPublicKey(meta.publicKey);
    if (meta.peerId !== derived) {
      throw refuse(
        grpc.status.UNAUTHENTICATED,
        'peer-id-mismatch',
        `${method}: peer id ${JSON.stringify(meta.peerId)} does not belong to the request's public key (its peer id is ${derived})`,
      );
    }
    if (meta.nonce.byteLength !== NONCE_BYTES) {
      throw refuse(grpc.status.UNAUTHENTICATED, 'bad-nonce', `${method}: the nonce has ${meta.nonce.byteLength} bytes, expected ${NONCE_BYTES}`);
    }
    const signed = canonicalRequestBytes(method, meta, requestBody(request as object));
    if (!verifySignature(meta.publicKey, signed, meta.signature)) {
      throw refuse(
        grpc.status.UNAUTHENTICATED,
        'bad-signature',
        `${method}: the signature of peer ${derived} does not match the request (signed by another key, or altered after signing)`,
      );
    }
    // 3. Freshness: within the skew of this server's clock, and a nonce not seen in the window.
    const now = this.#now();
    const skew = meta.timestampMs - now;
    if (!Number.isSafeInteger(meta.timestampMs) || Math.abs(skew) > this.maxSkewMs) {
      const where = skew < 0 ? 'behind' : 'ahead of';
      throw refuse(
        grpc.status.UNAUTHENTICATED,
        'stale',
        `${method}: stale request from peer ${derived}: its timestamp ${meta.timestampMs} is ${Math.abs(skew)} ms ${where} ` +
          `this server's clock (${now}; allowed ±${this.maxSkewMs} ms); check both clocks (NTP)`,
      );
    }
    const seen = this.#nonces.checkAndAdd(`${derived}:${hex(meta.nonce)}`, now);
    if (seen === 'replayed') {
      throw refuse(grpc.status.UNAUTHENTICATED, 'replayed', `${method}: replayed request from peer ${derived} (nonce ${hex(meta.nonce)} was used before)`);
    }
    if (seen === 'full') {
      throw refuse(
        grpc.status.RESOURCE_EXHAUSTED,
        'replay-cache-full',
        `${method}: the server holds ${this.#nonces.maxEntries} recent nonces and takes no more until they expire; retry later`,
      );
    }
    return { peerId: derived, publicKey: Buffer.from(meta.publicKey), timestampMs: meta.timestampMs };
  }
}

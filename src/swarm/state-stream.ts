// FetchState, both sides. The payload is the global state's safetensors bytes (global-state.ts). The server
// streams it as StateChunks: the first carries the StateHeader (round, format, total bytes, SHA-256 of the
// whole payload, θ hash, chunk size); chunks follow in order without gaps, each exactly chunk_bytes but the
// last. The client checks every chunk's offset and length as it arrives, the payload's SHA-256 at the end,
// then parses it and checks θ's hash against the header; anything off is STATE_CORRUPT and nothing is used.
import { createHash } from 'crypto';
import { constants as bufferConstants } from 'buffer';
import * as grpc from '@grpc/grpc-js';
import { CheckpointCorruptError, CovenantError } from '../errors';
import { invalidParameter } from '../train/model-config';
import { GlobalState, STATE_PAYLOAD_FORMAT, decodeGlobalState, encodeGlobalState } from './global-state';
import { SignedClient } from './grpc-client';
import { CoordinatorMethods, FetchStateRequest, MessageInit, STATE_CHUNK_BYTES, StateChunk, StateHeader } from './proto';
import { RpcError } from './rpc-error';

/** A FetchState download that is truncated, out of order, oversized or fails a checksum. */
export class StateCorruptError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STATE_CORRUPT', message, options);
  }
}

interface Payload {
  pieces: Buffer[];
  totalBytes: number;
  sha256: string;
}

/** Payloads by state: a state is immutable, so its bytes and their hash are computed once. */
const payloads = new WeakMap<GlobalState, Payload>();

/** The state's payload pieces (no copy of θ or the momentum), length and SHA-256. */
export function statePayload(state: GlobalState): Payload {
  let p = payloads.get(state);
  if (!p) {
    const pieces = encodeGlobalState(state);
    const hash = createHash('sha256');
    for (const piece of pieces) hash.update(piece);
    p = { pieces, totalBytes: pieces.reduce((a, b) => a + b.byteLength, 0), sha256: hash.digest('hex') };
    payloads.set(state, p);
  }
  return p;
}

/** Bytes [begin, end) of the pieces as one Buffer (a view when they lie in one piece). */
function slice(pieces: readonly Buffer[], begin: number, end: number): Buffer {
  const parts: Buffer[] = [];
  let base = 0;
  for (const piece of pieces) {
    const pEnd = base + piece.byteLength;
    if (pEnd > begin && base < end) parts.push(piece.subarray(Math.max(begin - base, 0), Math.min(end, pEnd) - base));
    if (pEnd >= end) break;
    base = pEnd;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

export interface StreamStateOptions {
  /** Payload bytes per chunk (default and maximum STATE_CHUNK_BYTES). */
  chunkBytes?: number;
  /** Stops the stream (the handler's ctx.signal). */
  signal?: AbortSignal;
}

/**
 * Server side of FetchState: the chunks of `state` for `request` (min_round, and offset + expect_sha256 to
 * resume). Refusals are RpcErrors: FAILED_PRECONDITION `state-too-old` when the state is older than
 * min_round, `state-changed` when a resume names another payload; OUT_OF_RANGE `bad-offset`.
 */
export async function* streamState(
  state: GlobalState,
  request: Partial<Pick<FetchStateRequest, 'minRound' | 'offset' | 'expectSha256'>> = {},
  options: StreamStateOptions = {},
): AsyncGenerator<MessageInit<StateChunk>, void, undefined> {
  const chunkBytes = options.chunkBytes ?? STATE_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes > STATE_CHUNK_BYTES) {
    throw new RangeError(invalidParameter('chunkBytes', `an integer in [1, ${STATE_CHUNK_BYTES}]`, chunkBytes));
  }
  const minRound = request.minRound ?? 0;
  if (minRound > state.round) {
    throw new RpcError(grpc.status.FAILED_PRECONDITION, `the latest state is round ${state.round}, older than the requested min_round ${minRound}`, 'state-too-old');
  }
  const payload = statePayload(state);
  const start = request.offset ?? 0;
  if (!Number.isSafeInteger(start) || start < 0 || start > payload.totalBytes) {
    throw new RpcError(grpc.status.OUT_OF_RANGE, `offset ${start} is outside the payload of ${payload.totalBytes} bytes`, 'bad-offset');
  }
  if (start > 0 && request.expectSha256 !== payload.sha256) {
    throw new RpcError(
      grpc.status.FAILED_PRECONDITION,
      `cannot resume at offset ${start}: the payload is now ${payload.sha256} (round ${state.round}), not ${JSON.stringify(request.expectSha256 ?? '')}; fetch from offset 0`,
      'state-changed',
    );
  }
  const header: MessageInit<StateHeader> = {
    round: state.round,
    format: STATE_PAYLOAD_FORMAT,
    totalBytes: payload.totalBytes,
    sha256: payload.sha256,
    thetaSha256: state.thetaHash,
    chunkBytes,
  };
  let offset = start;
  let first = true;
  // Chunks are aligned to chunk_bytes from the payload start, so a resumed download keeps the same grid.
  do {
    if (options.signal?.aborted) return;
    const end = Math.min(payload.totalBytes, (Math.floor(offset / chunkBytes) + 1) * chunkBytes);
    yield { header: first ? header : null, offset, data: slice(payload.pieces, offset, end) };
    first = false;
    offset = end;
  } while (offset < payload.totalBytes);
}

export interface FetchStateOptions {
  /** Refuse a state older than this (sent as min_round; checked again on the header). */
  minRound?: number;
  /** Refuse any payload but this one (its SHA-256, from a source trusted for it: a data peer's state). */
  expectSha256?: string;
  /** Largest payload accepted (default: the largest Buffer Node can hold). */
  maxBytes?: number;
  deadlineMs?: number;
  signal?: AbortSignal;
}

const HEX64 = /^[0-9a-f]{64}$/;

function checkHeader(h: StateHeader | null, minRound: number, maxBytes: number): StateHeader {
  const fail = (what: string) => new StateCorruptError(`FetchState: ${what}; the download is refused`);
  if (!h) throw fail('the first chunk carries no header');
  if (h.format !== STATE_PAYLOAD_FORMAT) throw fail(`the payload format is ${JSON.stringify(h.format)}, expected ${JSON.stringify(STATE_PAYLOAD_FORMAT)}`);
  if (!Number.isSafeInteger(h.totalBytes) || h.totalBytes <= 0) throw fail(`total_bytes ${h.totalBytes} is not a positive integer`);
  if (h.totalBytes > maxBytes) throw fail(`total_bytes ${h.totalBytes} is over the ${maxBytes}-byte limit`);
  if (!Number.isSafeInteger(h.chunkBytes) || h.chunkBytes <= 0 || h.chunkBytes > STATE_CHUNK_BYTES) {
    throw fail(`chunk_bytes ${h.chunkBytes} is outside [1, ${STATE_CHUNK_BYTES}]`);
  }
  if (!HEX64.test(h.sha256)) throw fail(`sha256 ${JSON.stringify(h.sha256)} is not a lowercase hex SHA-256`);
  if (!HEX64.test(h.thetaSha256)) throw fail(`theta_sha256 ${JSON.stringify(h.thetaSha256)} is not a lowercase hex SHA-256`);
  if (!Number.isSafeInteger(h.round) || h.round < minRound) throw fail(`the state is round ${h.round}, older than the requested min_round ${minRound}`);
  return h;
}

/**
 * Client side of FetchState: downloads, reassembles and verifies the global state. A stream that is
 * truncated, reordered, has gaps, oversized chunks or a second header, or whose payload or θ fails its
 * SHA-256, throws StateCorruptError (code STATE_CORRUPT); transport failures and refusals are RpcErrors.
 */
/** What serves FetchState: the coordinator, or a data peer (the same stream). */
export interface StateSource {
  stream(method: 'fetchState', body: { minRound: number }, options: { deadlineMs?: number; signal?: AbortSignal }): AsyncIterable<StateChunk>;
}

export async function fetchState(client: StateSource, options: FetchStateOptions = {}): Promise<GlobalState> {
  const minRound = options.minRound ?? 0;
  const maxBytes = Math.min(options.maxBytes ?? bufferConstants.MAX_LENGTH, bufferConstants.MAX_LENGTH);
  let header: StateHeader | undefined;
  let payload: Buffer | undefined;
  let received = 0;
  let chunks = 0;
  const hash = createHash('sha256');
  const fail = (what: string) => new StateCorruptError(`FetchState: ${what}; the download is refused`);
  for await (const chunk of client.stream('fetchState', { minRound }, { deadlineMs: options.deadlineMs, signal: options.signal })) {
    if (!header) {
      header = checkHeader(chunk.header, minRound, maxBytes);
      if (options.expectSha256 !== undefined && header.sha256 !== options.expectSha256) {
        throw fail(`the payload is ${header.sha256} (round ${header.round}), not the expected ${options.expectSha256}`);
      }
      payload = Buffer.allocUnsafe(header.totalBytes);
    } else if (chunk.header) {
      throw fail(`chunk ${chunks} carries a second header`);
    }
    const data = chunk.data;
    if (chunk.offset !== received) {
      throw fail(`chunk ${chunks} is at offset ${chunk.offset} but ${received} bytes have arrived (out of order, a gap or a repeat)`);
    }
    const remaining = header.totalBytes - received;
    const expected = Math.min(header.chunkBytes, remaining);
    if (data.byteLength !== expected) {
      throw fail(`chunk ${chunks} at offset ${received} has ${data.byteLength} bytes, expected ${expected} (chunk_bytes ${header.chunkBytes}, ${remaining} to go)`);
    }
    (payload as Buffer).set(data, received);
    hash.update(data);
    received += data.byteLength;
    chunks += 1;
  }
  if (!header || !payload) throw fail('the stream ended without a header');
  if (received !== header.totalBytes) throw fail(`the stream ended after ${received} of ${header.totalBytes} bytes (truncated)`);
  const sha = hash.digest('hex');
  if (sha !== header.sha256) throw fail(`the payload's SHA-256 is ${sha} but the header says ${header.sha256} (tampered or corrupted in transit)`);
  let state: GlobalState;
  try {
    state = decodeGlobalState(payload, `FetchState payload of round ${header.round}`);
  } catch (e) {
    if (e instanceof CheckpointCorruptError) throw new StateCorruptError(`FetchState: ${e.message}; the download is refused`, { cause: e });
    throw e;
  }
  if (state.round !== header.round) throw fail(`the payload is round ${state.round} but the header says round ${header.round}`);
  if (state.thetaHash !== header.thetaSha256) throw fail(`theta's SHA-256 is ${state.thetaHash} but the header says ${header.thetaSha256}`);
  return state;
}

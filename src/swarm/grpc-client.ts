// A gRPC client for covenant services: signs every request with the peer's identity (a fresh nonce and
// timestamp per call, so a retry is a new request), always sets a deadline, bounds message sizes, and turns
// failures into RpcError with the status, the server's reason and the caller's stack.
import * as grpc from '@grpc/grpc-js';
import { invalidParameter } from '../train/model-config';
import { Identity } from './identity';
import {
  DEFAULT_DEADLINE_MS, DEFAULT_STREAM_DEADLINE_MS, LoadedService, MethodSpec, MethodTable, RequestBody, deadline, messageLimitOptions,
} from './proto';
import { fromServiceError } from './rpc-error';
import { SignOptions, signRequest } from './signed-request';

/** Names of the unary (false) or server-streaming (true) methods of a table. */
export type MethodsOf<M extends MethodTable, Stream extends boolean> = {
  [K in keyof M & string]: M[K] extends MethodSpec<unknown, unknown, infer S> ? (S extends Stream ? K : never) : never;
}[keyof M & string];

export interface SignedClientOptions {
  /** 'host:port' of the server. */
  address: string;
  identity: Identity;
  runId: string;
  /** Defaults to PROTOCOL_VERSION. */
  protocolVersion?: number;
  /** Deadline of unary calls that name none (default DEFAULT_DEADLINE_MS). */
  deadlineMs?: number;
  /** Deadline of streaming calls that name none (default DEFAULT_STREAM_DEADLINE_MS). */
  streamDeadlineMs?: number;
  /** Largest response message accepted (default MAX_MESSAGE_BYTES). */
  maxReceiveBytes?: number;
  /** Largest request message sent (default MAX_MESSAGE_BYTES); larger ones fail here with RESOURCE_EXHAUSTED. */
  maxSendBytes?: number;
  /** Default: no TLS. */
  credentials?: grpc.ChannelCredentials;
}

export interface CallOptions {
  /** This call's deadline in ms from now. */
  deadlineMs?: number;
  /** Cancels the call (it then fails with CANCELLED). */
  signal?: AbortSignal;
  /** Timestamp and nonce overrides (tests and tools). */
  sign?: SignOptions;
}

export class SignedClient<M extends MethodTable> {
  readonly service: LoadedService<M>;
  readonly identity: Identity;
  readonly runId: string;
  readonly protocolVersion: number | undefined;
  readonly #client: grpc.Client;
  readonly #deadlineMs: number;
  readonly #streamDeadlineMs: number;

  constructor(service: LoadedService<M>, options: SignedClientOptions) {
    if (typeof options.address !== 'string' || options.address.length === 0) throw new TypeError(invalidParameter('address', "a 'host:port' string", options.address));
    if (!(options.identity instanceof Identity)) throw new TypeError(invalidParameter('identity', 'an Identity', options.identity));
    if (typeof options.runId !== 'string' || options.runId.length === 0) throw new TypeError(invalidParameter('runId', 'a non-empty string', options.runId));
    this.service = service;
    this.identity = options.identity;
    this.runId = options.runId;
    this.protocolVersion = options.protocolVersion;
    this.#deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.#streamDeadlineMs = options.streamDeadlineMs ?? DEFAULT_STREAM_DEADLINE_MS;
    deadline(this.#deadlineMs); // validates both now rather than at the first call
    deadline(this.#streamDeadlineMs);
    this.#client = new grpc.Client(
      options.address,
      options.credentials ?? grpc.credentials.createInsecure(),
      messageLimitOptions({ maxReceiveBytes: options.maxReceiveBytes, maxSendBytes: options.maxSendBytes }),
    );
  }

  #method(name: string): grpc.MethodDefinition<unknown, unknown> {
    const def = (this.service.methods as Record<string, grpc.MethodDefinition<unknown, unknown>>)[name];
    if (!def) throw new RangeError(`${this.service.name} has no method ${name}; its methods are ${Object.keys(this.service.methods).join(', ')}`);
    return def;
  }

  /** The signed request for `body` (what `call` sends). */
  sign<K extends keyof M & string>(method: K, body: RequestBody<M[K]['request']>, options: SignOptions = {}): M[K]['request'] {
    const def = this.#method(method) as grpc.MethodDefinition<{ meta: null }, unknown>;
    return signRequest(this.identity, def, body as RequestBody<{ meta: null }>, { runId: this.runId, protocolVersion: this.protocolVersion }, options);
  }

  /** Signs `body` and calls the unary `method`. */
  call<K extends MethodsOf<M, false>>(method: K, body: RequestBody<M[K]['request']>, options: CallOptions = {}): Promise<M[K]['response']> {
    const callSite = new Error();
    let request: M[K]['request'];
    try {
      request = this.sign(method, body, options.sign);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#unary(method, request, options, callSite);
  }

  /**
   * Sends `request` exactly as given: no signing, no normalization. For tests and tools that must send a
   * request built or altered by hand (the server refuses anything not properly signed).
   */
  callPrepared<K extends MethodsOf<M, false>>(method: K, request: M[K]['request'], options: CallOptions = {}): Promise<M[K]['response']> {
    return this.#unary(method, request, options, new Error());
  }

  #unary<K extends keyof M & string>(method: K, request: M[K]['request'], options: CallOptions, callSite: Error): Promise<M[K]['response']> {
    const def = this.#method(method);
    const label = `${this.service.name}/${def.path.slice(def.path.lastIndexOf('/') + 1)}`;
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(fromServiceError({ code: grpc.status.CANCELLED, details: 'cancelled before the call started' }, label, callSite));
        return;
      }
      const call = this.#client.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        request,
        new grpc.Metadata(),
        { deadline: deadline(options.deadlineMs ?? this.#deadlineMs) },
        (err, response) => {
          options.signal?.removeEventListener('abort', cancel);
          if (err) reject(fromServiceError(err, label, callSite));
          else resolve(response as M[K]['response']);
        },
      );
      const cancel = () => call.cancel();
      options.signal?.addEventListener('abort', cancel, { once: true });
    });
  }

  /**
   * Signs `body` and calls the server-streaming `method`; iterate the result for the messages. Leaving the
   * loop early (break, throw) cancels the call; a failure is thrown as RpcError from the loop.
   */
  async *stream<K extends MethodsOf<M, true>>(
    method: K,
    body: RequestBody<M[K]['request']>,
    options: CallOptions = {},
  ): AsyncGenerator<M[K]['response'], void, undefined> {
    const callSite = new Error();
    const def = this.#method(method);
    const label = `${this.service.name}/${def.path.slice(def.path.lastIndexOf('/') + 1)}`;
    const request = this.sign(method, body, options.sign);
    if (options.signal?.aborted) throw fromServiceError({ code: grpc.status.CANCELLED, details: 'cancelled before the call started' }, label, callSite);
    const call = this.#client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new grpc.Metadata(), {
      deadline: deadline(options.deadlineMs ?? this.#streamDeadlineMs),
    });
    const cancel = () => call.cancel();
    options.signal?.addEventListener('abort', cancel, { once: true });
    let finished = false;
    try {
      for await (const message of call) yield message as M[K]['response'];
      finished = true;
    } catch (e) {
      finished = true;
      throw fromServiceError(e, label, callSite);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      if (!finished) call.cancel();
    }
  }

  /** Closes the channel; calls in flight fail with CANCELLED or UNAVAILABLE. */
  close(): void {
    this.#client.close();
  }
}

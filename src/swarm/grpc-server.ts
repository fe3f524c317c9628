// A gRPC server for covenant services: binds with message-size limits, and wraps every handler so that the
// RequestVerifier runs first; a request that is unsigned, mis-signed, stale, replayed or for another run
// never reaches the handler. Handlers get the decoded request and the verified peer, return (or yield)
// responses, and throw RpcError for a refusal with a gRPC status; anything else becomes INTERNAL.
import * as grpc from '@grpc/grpc-js';
import { invalidParameter } from '../train/model-config';
import { LoadedService, MessageInit, MethodSpec, MethodTable, messageLimitOptions } from './proto';
import { RpcError, toServiceError } from './rpc-error';
import { RequestVerifier, VerifiedPeer } from './signed-request';

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** The verified sender. */
  peer: VerifiedPeer;
  /** The method's path, '/covenant.v1.Coordinator/Join'. */
  method: string;
  /** The transport address of the caller ('ipv4:127.0.0.1:53412'); not authenticated. */
  remoteAddress: string;
  /** Aborted when the client cancels or its deadline passes. */
  signal: AbortSignal;
}

export type UnaryHandler<Req, Res> = (request: Req, ctx: CallContext) => MessageInit<Res> | Promise<MessageInit<Res>>;
/** A server-streaming handler yields the messages to send; the stream ends when it returns. */
export type ServerStreamHandler<Req, Res> = (request: Req, ctx: CallContext) => AsyncIterable<MessageInit<Res>> | Iterable<MessageInit<Res>>;

/** The handlers of a method table: unary methods get a UnaryHandler, streaming ones a ServerStreamHandler. */
export type Handlers<M extends MethodTable> = {
  [K in keyof M]: M[K] extends MethodSpec<infer Req, infer Res, infer Stream>
    ? Stream extends true
      ? ServerStreamHandler<Req, Res>
      : UnaryHandler<Req, Res>
    : never;
};

export interface SignedServerOptions {
  verifier: RequestVerifier;
  /** Largest request message accepted (default MAX_MESSAGE_BYTES); larger ones get RESOURCE_EXHAUSTED. */
  maxReceiveBytes?: number;
  /** Largest response message sent (default MAX_MESSAGE_BYTES). */
  maxSendBytes?: number;
  /** Called for every request the verifier refused (for metrics and logs). */
  onRefused?: (method: string, error: RpcError) => void;
  /** Called when a handler fails with anything but an RpcError (a bug, or an unexpected failure). */
  onHandlerError?: (method: string, error: unknown) => void;
}

export class SignedServer {
  readonly verifier: RequestVerifier;
  readonly #server: grpc.Server;
  readonly #options: SignedServerOptions;
  #port: number | undefined;

  constructor(options: SignedServerOptions) {
    if (!(options.verifier instanceof RequestVerifier)) throw new TypeError(invalidParameter('verifier', 'a RequestVerifier', options.verifier));
    this.verifier = options.verifier;
    this.#options = options;
    this.#server = new grpc.Server(messageLimitOptions({ maxReceiveBytes: options.maxReceiveBytes, maxSendBytes: options.maxSendBytes }));
  }

  /** The bound port, after listen(). */
  get port(): number {
    if (this.#port === undefined) throw new Error('SignedServer.port: the server is not listening; call listen() first');
    return this.#port;
  }

  /** Registers a service. Methods without a handler answer UNIMPLEMENTED (after verification). */
  addService<M extends MethodTable>(service: LoadedService<M>, handlers: Partial<Handlers<M>>): this {
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [name, def] of Object.entries(service.methods) as [string, grpc.MethodDefinition<unknown, unknown>][]) {
      if (def.requestStream) throw new Error(`${def.path}: client-streaming methods are not supported by SignedServer`);
      const handler = (handlers as Record<string, unknown>)[name];
      if (handler !== undefined && typeof handler !== 'function') throw new TypeError(invalidParameter(`handlers.${name}`, 'a function', handler));
      const h = (handler as ((req: unknown, ctx: CallContext) => unknown) | undefined) ?? unimplemented(def.path);
      impl[name] = def.responseStream
        ? this.#wrapServerStream(def.path, h as ServerStreamHandler<unknown, unknown>)
        : this.#wrapUnary(def.path, h as UnaryHandler<unknown, unknown>);
    }
    for (const name of Object.keys(handlers)) {
      if (!(name in service.methods)) throw new RangeError(`handlers.${name}: ${service.name} has no method ${name}; its methods are ${Object.keys(service.methods).join(', ')}`);
    }
    this.#server.addService(service.definition, impl);
    return this;
  }

  /**
   * Binds `address` ('127.0.0.1:0' for an ephemeral loopback port, '0.0.0.0:7100' for all interfaces) without
   * TLS, and returns the bound port.
   */
  async listen(address = '127.0.0.1:0', credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(address, credentials, (err, port) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`, { cause: err })) : resolve(port)));
    });
    return this.#port;
  }

  /** Stops accepting calls, lets running ones finish for up to `graceMs`, then cancels the rest. */
  async close(graceMs = 5000): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Verifies the request: the handler's context, or the status that refuses the call. */
  #verify(
    method: string,
    call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  ): { ctx: CallContext } | { refusal: Partial<grpc.StatusObject> } {
    let peer: VerifiedPeer;
    try {
      peer = this.verifier.verify(method, call.request);
    } catch (e) {
      if (e instanceof RpcError) this.#options.onRefused?.(method, e);
      else this.#options.onHandlerError?.(method, e);
      return { refusal: toServiceError(e, method) };
    }
    const controller = new AbortController();
    if (call.cancelled) controller.abort();
    else call.once('cancelled', () => controller.abort());
    return { ctx: { peer, method, remoteAddress: call.getPeer(), signal: controller.signal } };
  }

  #failed(method: string, e: unknown): Partial<grpc.StatusObject> {
    if (!(e instanceof RpcError)) this.#options.onHandlerError?.(method, e);
    return toServiceError(e, method);
  }

  #wrapUnary(method: string, handler: UnaryHandler<unknown, unknown>): grpc.handleUnaryCall<unknown, unknown> {
    return (call, callback) => {
      const v = this.#verify(method, call);
      if ('refusal' in v) {
        callback(v.refusal);
        return;
      }
      Promise.resolve()
        .then(() => handler(call.request, v.ctx))
        .then(
          (response) => callback(null, response),
          (e: unknown) => callback(this.#failed(method, e)),
        );
    };
  }

  #wrapServerStream(method: string, handler: ServerStreamHandler<unknown, unknown>): grpc.handleServerStreamingCall<unknown, unknown> {
    return (call) => {
      const v = this.#verify(method, call);
      if ('refusal' in v) {
        call.emit('error', v.refusal);
        return;
      }
      const { ctx } = v;
      void (async () => {
        try {
          for await (const message of handler(call.request, ctx)) {
            if (call.cancelled) break; // leaving the loop runs the generator's finally blocks
            if (!call.write(message)) await drained(call, ctx.signal);
          }
          if (!call.cancelled) call.end();
        } catch (e) {
          if (!call.cancelled) call.emit('error', this.#failed(method, e));
        }
      })();
    };
  }
}

/** Resolves when `stream` wants more (or closed) or `signal` aborts; leaves no listener behind. */
function drained(stream: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    signal.addEventListener('abort', done);
    if (signal.aborted) done();
  });
}

function unimplemented(path: string): () => never {
  return () => {
    throw new RpcError(grpc.status.UNIMPLEMENTED, `${path} is not implemented by this server`);
  };
}

// The metrics HTTP server (node:http), the same for both roles:
//   GET /metrics  Prometheus text exposition of the process registry (text/plain; version=0.0.4)
//   GET /healthz  200 "ok" while the liveness check passes (default: the event loop answered), else 503
//   GET /readyz   200 "ready" only when the readiness check says so, else 503 with the reason
//   anything else 404; a method other than GET or HEAD on those paths 405.
// start() listens (port 0 picks a free one); stop() closes the listener and every open connection, so
// the port is free when it resolves.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HealthCheck, runHealthCheck } from './health';
import type { Logger } from '../log';

/** What the server exposes: a MetricsRegistry, or any registry with these two members. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsServerOptions {
  registry: MetricsSource;
  /** Default '127.0.0.1'; '0.0.0.0' or '::' to be scraped from other hosts. */
  host?: string;
  /** Default 0 (a free port; see address()). */
  port?: number;
  /** /healthz; default: alive whenever the server can answer. */
  liveness?: HealthCheck;
  /** /readyz; default: not ready ("no readiness check set") until setReadiness(). */
  readiness?: HealthCheck;
  log?: Logger;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses 'HOST:PORT' (IPv6 as '[::]:9471') for the --metrics flag; `name` is the flag in the message. */
export function parseListenAddress(name: string, raw: unknown): ListenAddress {
  if (typeof raw !== 'string') throw new TypeError(`Expected 'host:port' for ${name} but received ${typeof raw}`);
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(raw) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(raw);
  if (!m) throw new RangeError(`Expected 'host:port' (IPv6 as '[addr]:port') for ${name} but received ${JSON.stringify(raw)}`);
  const port = Number(m[2]);
  if (port > 65535) throw new RangeError(`Expected a port in [0, 65535] for ${name} but received ${port}`);
  return { host: m[1], port };
}

const PATHS = ['/metrics', '/healthz', '/readyz'];

export class MetricsServer {
  private readonly registry: MetricsSource;
  private readonly host: string;
  private readonly port: number;
  private liveness?: HealthCheck;
  private readiness?: HealthCheck;
  private readonly log?: Logger;
  private server?: http.Server;
  private bound?: ListenAddress;

  constructor(opts: MetricsServerOptions) {
    if (typeof opts !== 'object' || opts === null || typeof opts.registry?.metrics !== 'function') {
      throw new TypeError('MetricsServer needs { registry } (a MetricsRegistry)');
    }
    this.registry = opts.registry;
    this.host = opts.host ?? '127.0.0.1';
    if (typeof this.host !== 'string' || this.host === '') throw new TypeError(`Expected a host name or address for host but received ${JSON.stringify(opts.host)}`);
    this.port = opts.port ?? 0;
    if (!Number.isInteger(this.port) || this.port < 0 || this.port > 65535) {
      throw new RangeError(`Expected an integer in [0, 65535] for port but received ${String(opts.port)}`);
    }
    this.liveness = opts.liveness;
    this.readiness = opts.readiness;
    this.log = opts.log;
  }

  setLiveness(check: HealthCheck | undefined): void {
    this.liveness = check;
  }

  setReadiness(check: HealthCheck | undefined): void {
    this.readiness = check;
  }

  /** Where it listens (the real port when 0 was asked for); undefined before start(). */
  address(): ListenAddress | undefined {
    return this.bound;
  }

  /** Base URL, e.g. http://127.0.0.1:9471 (IPv6 in brackets); throws before start(). */
  get url(): string {
    if (!this.bound) throw new Error('MetricsServer is not listening: call start() first');
    const h = this.bound.host.includes(':') ? `[${this.bound.host}]` : this.bound.host;
    return `http://${h}:${this.bound.port}`;
  }

  /** Listens; rejects with a message naming the address when it cannot (e.g. EADDRINUSE). */
  async start(): Promise<ListenAddress> {
    if (this.server) throw new Error('MetricsServer already started');
    const server = http.createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 5000;
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.port, this.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      this.server = undefined;
      const code = (e as { code?: unknown }).code;
      const hint = code === 'EADDRINUSE' ? ': address in use; choose another port (--metrics HOST:PORT)' : code === 'EADDRNOTAVAIL' ? ': no such local address' : '';
      throw new Error(`cannot serve metrics on ${this.host}:${this.port}${hint} (${e instanceof Error ? e.message : String(e)})`, { cause: e });
    }
    const a = server.address() as AddressInfo;
    this.bound = { host: a.address, port: a.port };
    this.log?.info('metrics.listen', { url: this.url });
    return this.bound;
  }

  /** Closes the listener and every connection; resolves when the port is released. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.bound = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      path = '';
    }
    const head = req.method === 'HEAD';
    const send = (status: number, body: string, contentType = 'text/plain; charset=utf-8', extra: http.OutgoingHttpHeaders = {}) => {
      res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...extra });
      res.end(head ? undefined : body);
    };
    if (!PATHS.includes(path)) {
      send(404, `not found: ${path}; try ${PATHS.join(', ')}\n`);
      return;
    }
    if (req.method !== 'GET' && !head) {
      send(405, `method ${req.method} not allowed; use GET\n`, undefined, { Allow: 'GET, HEAD' });
      return;
    }
    if (path === '/metrics') {
      try {
        send(200, await this.registry.metrics(), this.registry.contentType);
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        this.log?.error('metrics.collect_failed', { error: e });
        send(500, `collecting metrics failed: ${message}\n`);
      }
      return;
    }
    if (path === '/healthz') {
      const s = this.liveness ? runHealthCheck(this.liveness) : { ok: true };
      send(s.ok ? 200 : 503, s.ok ? 'ok\n' : `unhealthy: ${s.reason}\n`);
      return;
    }
    const s = this.readiness ? runHealthCheck(this.readiness) : { ok: false, reason: 'no readiness check set' };
    send(s.ok ? 200 : 503, s.ok ? 'ready\n' : `not ready: ${s.reason}\n`);
  }
}

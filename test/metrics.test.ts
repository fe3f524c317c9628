// Tests for src/metrics: names and labels checked at creation, the role const label, the subsystem
// helpers moving their series, the HTTP endpoints (status codes, content type, port released on stop),
// and /metrics output that parses as Prometheus text exposition.
import * as http from 'node:http';
import * as net from 'node:net';
import {
  createCoordinatorMetrics,
  createWorkerMetrics,
  failureReason,
  ALLREDUCE_FAILURE_REASONS,
  MetricsRegistry,
} from '../src/metrics';
import { Heartbeat, runHealthCheck } from '../src/metrics/health';
import { MetricsServer, parseListenAddress } from '../src/metrics/http';
import { checkMetricName } from '../src/metrics/registry';
import { ringBytesPerRank } from '../src/metrics/allreduce';
import { Family, parsePrometheusText, sampleValue } from './helpers/prom-text';

function get(url: string, method = 'GET'): Promise<{ status: number; type: string; body: string; allow?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body, allow: res.headers.allow }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function scrape(registry: MetricsRegistry): Promise<Map<string, Family>> {
  return parsePrometheusText(await registry.metrics());
}

describe('metric names and labels', () => {
  const reg = new MetricsRegistry({ role: 'worker', defaultMetrics: false });

  test.each([
    ['counter', 'step_seconds_total', /starts with "covenant_"/],
    ['counter', 'covenanttokens_total', /starts with "covenant_"/],
    ['counter', 'covenant_', /lowercase snake_case/],
    ['gauge', 'covenant_Loss', /lowercase snake_case/],
    ['gauge', 'covenant:loss', /lowercase snake_case/],
    ['gauge', 'covenant_loss__x', /lowercase snake_case/],
    ['histogram', 'covenant_step_duration_ms', /"ms" is not a base unit; use seconds/],
    ['counter', 'covenant_sent_mib_total', /"mib" is not a base unit; use bytes/],
    ['gauge', 'covenant_gpu_util_percent', /"percent" is not a base unit; use a ratio/],
    ['gauge', 'covenant_round_minutes', /"minutes" is not a base unit/],
    ['counter', 'covenant_train_tokens', /a counter ends in _total/],
    ['gauge', 'covenant_tokens_total', /only counters end in _total/],
    ['histogram', 'covenant_step_duration', /a histogram ends in its base unit/],
    ['gauge', 'covenant_step_bucket', /suffix _bucket is added by the exposition/],
    ['gauge', 'covenant_step_count', /suffix _count/],
  ] as const)('%s %s is refused', (kind, name, message) => {
    expect(() => checkMetricName(kind, name)).toThrow(RangeError);
    expect(() => checkMetricName(kind, name)).toThrow(message);
    const create = { counter: () => reg.counter({ name, help: 'x' }), gauge: () => reg.gauge({ name, help: 'x' }), histogram: () => reg.histogram({ name, help: 'x', buckets: [1] }) }[kind];
    expect(create).toThrow(message);
    expect(reg.names()).not.toContain(name);
  });

  test('good names pass, with the name in every message', () => {
    expect(() => checkMetricName('counter', 'covenant_allreduce_sent_bytes_total')).not.toThrow();
    expect(() => checkMetricName('gauge', 'covenant_allreduce_busbw_bytes_per_second')).not.toThrow();
    expect(() => checkMetricName('histogram', 'covenant_round_duration_seconds')).not.toThrow();
    expect(() => checkMetricName('gauge', 'covenant_swarm_min_members')).not.toThrow();
    expect(() => checkMetricName('gauge', 42)).toThrow(TypeError);
    expect(() => checkMetricName('gauge', 'covenant_x_ms')).toThrow('Metric name "covenant_x_ms" is invalid');
  });

  test('labels that name a peer, host, round or step are refused', () => {
    for (const label of ['peer_id', 'peer', 'addr', 'host', 'round', 'step', 'rank', 'remote_address']) {
      expect(() => reg.counter({ name: `covenant_t_${label}_total`, help: 'x', labels: { [label]: ['a'] } })).toThrow(/unbounded cardinality/);
    }
    expect(() => reg.counter({ name: 'covenant_t_le_total', help: 'x', labels: { le: ['a'] } })).toThrow(/reserved/);
    expect(() => reg.counter({ name: 'covenant_t_role_total', help: 'x', labels: { role: ['a'] } })).toThrow(/reserved/);
    expect(() => reg.counter({ name: 'covenant_t_open_total', help: 'x', labels: { reason: [] } })).toThrow(/non-empty array/);
    const many = Array.from({ length: 33 }, (_, i) => `v${i}`);
    expect(() => reg.counter({ name: 'covenant_t_many_total', help: 'x', labels: { reason: many } })).toThrow(/33 series/);
    expect(() => reg.counter({ name: 'covenant_t_nohelp_total', help: '' })).toThrow(/help text/);
    expect(() => reg.histogram({ name: 'covenant_t_b_seconds', help: 'x', buckets: [1, 1] })).toThrow(/strictly increasing/);
  });

  test('a name is registered once', () => {
    reg.counter({ name: 'covenant_t_once_total', help: 'x' });
    expect(() => reg.counter({ name: 'covenant_t_once_total', help: 'x' })).toThrow(/already registered/);
    expect(() => reg.gauge({ name: 'covenant_t_once_total', help: 'x' })).toThrow(/only counters/);
  });

  test('the role is checked, and per-role bundles need the matching registry', () => {
    expect(() => new MetricsRegistry({ role: 'peer' as never })).toThrow(/'worker' or 'coordinator' for role/);
    expect(() => createWorkerMetrics(new MetricsRegistry({ role: 'coordinator', defaultMetrics: false }))).toThrow(/role worker/);
  });
});

describe('registry exposition', () => {
  test('one namespace, the role on every series, Node process metrics included', async () => {
    const { registry } = createWorkerMetrics(new MetricsRegistry({ role: 'worker' }));
    const families = await scrape(registry);
    expect(families.size).toBeGreaterThan(20);
    for (const f of families.values()) {
      expect(f.name.startsWith('covenant_')).toBe(true);
      expect(f.help).toBeTruthy();
      for (const s of f.samples) expect(s.labels.role).toBe('worker');
    }
    for (const name of ['covenant_process_cpu_seconds_total', 'covenant_process_resident_memory_bytes', 'covenant_nodejs_eventloop_lag_seconds', 'covenant_nodejs_heap_size_used_bytes']) {
      expect(families.has(name)).toBe(true);
    }
    // Every name the registry reports is exposed, and every exposed family is reported.
    expect([...families.keys()].sort()).toEqual(registry.names());
    // Our own metrics follow the naming rules with their declared kind.
    for (const name of registry.names().filter((n) => /^covenant_(train|allreduce|round|swarm)_/.test(n))) {
      expect(() => checkMetricName(registry.kind(name)!, name)).not.toThrow();
      expect(families.get(name)!.type).toBe(registry.kind(name));
    }
  });

  test('a coordinator has membership metrics, no training series', async () => {
    const { registry } = createCoordinatorMetrics(new MetricsRegistry({ role: 'coordinator', defaultMetrics: false }));
    const families = await scrape(registry);
    expect(families.has('covenant_swarm_members')).toBe(true);
    expect(families.has('covenant_train_tokens_total')).toBe(false);
    expect(sampleValue(families, 'covenant_swarm_joins_total', { role: 'coordinator' })).toBe(0);
  });
});

describe('subsystem helpers move their series', () => {
  test('training', async () => {
    const m = createWorkerMetrics(new MetricsRegistry({ role: 'worker', defaultMetrics: false }));
    let f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_train_tokens_total')).toBe(0);
    expect(sampleValue(f, 'covenant_train_loss')).toBeNaN();
    m.training.startRound(50);
    m.training.observeStep({ loss: 5.5, tokens: 512, seconds: 0.2, lr: 6e-4, gradNorm: 1.5 });
    m.training.observeStep({ loss: 5.25, tokens: 512, seconds: 0.3 });
    m.training.setValLoss(5.4);
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_train_tokens_total')).toBe(1024);
    expect(sampleValue(f, 'covenant_train_inner_steps_total')).toBe(2);
    expect(sampleValue(f, 'covenant_train_inner_step')).toBe(2);
    expect(sampleValue(f, 'covenant_train_inner_steps_per_round')).toBe(50);
    expect(sampleValue(f, 'covenant_train_loss')).toBe(5.25);
    expect(sampleValue(f, 'covenant_train_val_loss')).toBe(5.4);
    expect(sampleValue(f, 'covenant_train_learning_rate')).toBe(6e-4);
    expect(sampleValue(f, 'covenant_train_step_duration_seconds_count')).toBe(2);
    expect(sampleValue(f, 'covenant_train_step_duration_seconds_sum')).toBeCloseTo(0.5, 12);
    expect(sampleValue(f, 'covenant_train_step_duration_seconds_bucket', { le: '0.25' })).toBe(1);
    expect(sampleValue(f, 'covenant_train_step_duration_seconds_bucket', { le: '+Inf' })).toBe(2);
    expect(() => m.training.observeStep({ loss: 1, tokens: -1, seconds: 1 })).toThrow(/tokens/);
    expect(() => m.training.observeStep({ loss: 1, tokens: 1, seconds: NaN })).toThrow(/seconds/);
  });

  test('all-reduce', async () => {
    const m = createWorkerMetrics(new MetricsRegistry({ role: 'worker', defaultMetrics: false }));
    let f = await scrape(m.registry);
    for (const reason of ALLREDUCE_FAILURE_REASONS) expect(sampleValue(f, 'covenant_allreduce_failures_total', { reason })).toBe(0);
    // 4 ranks, 1M elements in int8: each rank sends 1.5 × (1M codes + 4 × 8192 scales) plus headers.
    const elements = 1 << 20;
    const sent = 1.5 * (elements + 4 * 8192) + 4096;
    m.allreduce.observe({ seconds: 0.5, bytesSent: sent, bytesReceived: sent, ranks: 4, elements });
    m.allreduce.failure({ code: 'COMM_TIMEOUT', message: 'x' });
    m.allreduce.failure(new Error('who knows'));
    m.allreduce.failure('closed');
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_allreduce_duration_seconds_count')).toBe(1);
    expect(sampleValue(f, 'covenant_allreduce_sent_bytes_total')).toBe(sent);
    expect(sampleValue(f, 'covenant_allreduce_received_bytes_total')).toBe(sent);
    expect(sampleValue(f, 'covenant_allreduce_busbw_bytes_per_second')).toBe(sent / 0.5);
    expect(sampleValue(f, 'covenant_allreduce_compression_ratio')).toBeCloseTo((1.5 * 4 * elements) / sent, 12);
    expect(sampleValue(f, 'covenant_allreduce_compression_ratio')).toBeGreaterThan(3.8);
    expect(sampleValue(f, 'covenant_allreduce_ranks')).toBe(4);
    expect(sampleValue(f, 'covenant_allreduce_failures_total', { reason: 'timeout' })).toBe(1);
    expect(sampleValue(f, 'covenant_allreduce_failures_total', { reason: 'other' })).toBe(1);
    expect(sampleValue(f, 'covenant_allreduce_failures_total', { reason: 'closed' })).toBe(1);
    expect(failureReason({ code: 'COMM_AUTH' })).toBe('auth');
    expect(failureReason({ code: 'ENOENT' })).toBe('other');
    expect(ringBytesPerRank(1000, 1)).toBe(0);
    expect(ringBytesPerRank(1000, 2)).toBe(1000);
  });

  test('membership: set, bound live sources read at scrape, counters', async () => {
    const m = createCoordinatorMetrics(new MetricsRegistry({ role: 'coordinator', defaultMetrics: false }));
    let f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_round_number')).toBeNaN();
    m.membership.setRound(3);
    m.membership.setMembers(2);
    m.membership.setMinMembers(2);
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_round_number')).toBe(3);
    expect(sampleValue(f, 'covenant_swarm_members')).toBe(2);
    let members = 4;
    let round = 7;
    m.membership.bindMembers(() => members);
    m.membership.bindRound(() => round);
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_swarm_members')).toBe(4);
    expect(sampleValue(f, 'covenant_round_number')).toBe(7);
    members = 3;
    round = 8;
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_swarm_members')).toBe(3);
    expect(sampleValue(f, 'covenant_round_number')).toBe(8);
    m.membership.bindMembers(() => {
      throw new Error('table gone');
    });
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_swarm_members')).toBeNaN();
    m.membership.join();
    m.membership.join();
    m.membership.leave();
    m.membership.drop();
    m.membership.resync('hash_mismatch');
    m.membership.replan();
    m.membership.roundCommitted(42);
    f = await scrape(m.registry);
    expect(sampleValue(f, 'covenant_swarm_joins_total')).toBe(2);
    expect(sampleValue(f, 'covenant_swarm_leaves_total')).toBe(1);
    expect(sampleValue(f, 'covenant_swarm_drops_total')).toBe(1);
    expect(sampleValue(f, 'covenant_swarm_resyncs_total', { reason: 'hash_mismatch' })).toBe(1);
    expect(sampleValue(f, 'covenant_swarm_resyncs_total', { reason: 'behind' })).toBe(0);
    expect(sampleValue(f, 'covenant_round_replans_total')).toBe(1);
    expect(sampleValue(f, 'covenant_rounds_committed_total')).toBe(1);
    expect(sampleValue(f, 'covenant_round_duration_seconds_bucket', { le: '60' })).toBe(1);
    expect(sampleValue(f, 'covenant_round_duration_seconds_bucket', { le: '30' })).toBe(0);
    expect(() => m.membership.resync('peer-7' as never)).toThrow(/hash_mismatch, behind/);
  });
});

describe('health checks', () => {
  test('Heartbeat fails after its bound without a beat', () => {
    let now = 1_000_000;
    const hb = new Heartbeat(30, () => now);
    expect(runHealthCheck(hb.check)).toEqual({ ok: true });
    now += 31_000;
    expect(runHealthCheck(hb.check)).toEqual({ ok: false, reason: 'main loop silent for 31.0 s (bound 30 s)' });
    hb.beat();
    expect(runHealthCheck(hb.check).ok).toBe(true);
  });

  test('checks that throw or answer nonsense fail with a reason', () => {
    expect(runHealthCheck(() => false)).toEqual({ ok: false, reason: 'check returned false' });
    expect(runHealthCheck(() => ({ ok: false, reason: 'syncing' }))).toEqual({ ok: false, reason: 'syncing' });
    expect(runHealthCheck(() => { throw new Error('boom'); })).toEqual({ ok: false, reason: 'check threw: boom' });
    expect(runHealthCheck((() => 'yes') as never).ok).toBe(false);
  });
});

describe('MetricsServer', () => {
  const m = createWorkerMetrics(new MetricsRegistry({ role: 'worker' }));
  let server: MetricsServer;

  beforeEach(async () => {
    server = new MetricsServer({ registry: m.registry, host: '127.0.0.1', port: 0 });
    await server.start();
  });
  afterEach(() => server.stop());

  test('/metrics serves parseable Prometheus text with its content type, and moves', async () => {
    const before = await get(`${server.url}/metrics`);
    expect(before.status).toBe(200);
    expect(before.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    const f0 = parsePrometheusText(before.body);
    const tokens0 = sampleValue(f0, 'covenant_train_tokens_total');
    m.training.observeStep({ loss: 4, tokens: 256, seconds: 0.01 });
    m.allreduce.observe({ seconds: 1, bytesSent: 1000, bytesReceived: 900, ranks: 2, elements: 1000 });
    m.membership.setRound(5);
    const f1 = parsePrometheusText((await get(`${server.url}/metrics?x=1`)).body);
    expect(sampleValue(f1, 'covenant_train_tokens_total')).toBe(tokens0 + 256);
    expect(sampleValue(f1, 'covenant_round_number')).toBe(5);
    expect(sampleValue(f1, 'covenant_allreduce_sent_bytes_total')).toBeGreaterThanOrEqual(1000);
    const head = await get(`${server.url}/metrics`, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  test('/healthz: 200 by default, 503 with the reason when the liveness check fails', async () => {
    let r = await get(`${server.url}/healthz`);
    expect([r.status, r.body, r.type]).toEqual([200, 'ok\n', 'text/plain; charset=utf-8']);
    let now = 0;
    const hb = new Heartbeat(10, () => now);
    server.setLiveness(hb.check);
    expect((await get(`${server.url}/healthz`)).status).toBe(200);
    now = 11_000;
    r = await get(`${server.url}/healthz`);
    expect(r.status).toBe(503);
    expect(r.body).toBe('unhealthy: main loop silent for 11.0 s (bound 10 s)\n');
  });

  test('/readyz: 503 with a reason until the readiness check says ready', async () => {
    let r = await get(`${server.url}/readyz`);
    expect([r.status, r.body]).toEqual([503, 'not ready: no readiness check set\n']);
    let state = { ok: false, reason: 'pulling global state (round 12)' };
    server.setReadiness(() => state);
    r = await get(`${server.url}/readyz`);
    expect([r.status, r.body]).toEqual([503, 'not ready: pulling global state (round 12)\n']);
    state = { ok: true, reason: '' };
    r = await get(`${server.url}/readyz`);
    expect([r.status, r.body]).toEqual([200, 'ready\n']);
  });

  test('404 elsewhere, 405 for other methods', async () => {
    const r = await get(`${server.url}/nope`);
    expect(r.status).toBe(404);
    expect(r.body).toMatch(/try \/metrics, \/healthz, \/readyz/);
    expect((await get(`${server.url}/`)).status).toBe(404);
    const p = await get(`${server.url}/metrics`, 'POST');
    expect(p.status).toBe(405);
    expect(p.allow).toBe('GET, HEAD');
  });

  test('a failing collect gives 500, not a crash', async () => {
    const broken = new MetricsServer({ registry: { contentType: 'text/plain', metrics: () => Promise.reject(new Error('collector broke')) } });
    await broken.start();
    try {
      const r = await get(`${broken.url}/metrics`);
      expect([r.status, r.body]).toEqual([500, 'collecting metrics failed: collector broke\n']);
    } finally {
      await broken.stop();
    }
  });

  test('stop() releases the port, even with a keep-alive connection open; a busy port is named', async () => {
    const { port } = server.address()!;
    // Hold a keep-alive connection open across stop().
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
    await new Promise((r) => sock.once('data', r));
    const busy = new MetricsServer({ registry: m.registry, port });
    await expect(busy.start()).rejects.toThrow(`cannot serve metrics on 127.0.0.1:${port}: address in use`);
    const closed = new Promise((r) => sock.once('close', r));
    await server.stop();
    await closed;
    await server.stop(); // idempotent
    const again = new MetricsServer({ registry: m.registry, port });
    await again.start();
    expect(again.address()!.port).toBe(port);
    expect((await get(`${again.url}/healthz`)).status).toBe(200);
    await again.stop();
  });

  test('options and listen addresses are checked', () => {
    expect(() => new MetricsServer({ registry: m.registry, port: 70000 })).toThrow(/\[0, 65535\] for port/);
    expect(() => new MetricsServer({} as never)).toThrow(/needs \{ registry \}/);
    expect(parseListenAddress('--metrics', '0.0.0.0:9471')).toEqual({ host: '0.0.0.0', port: 9471 });
    expect(parseListenAddress('--metrics', '[::]:9470')).toEqual({ host: '::', port: 9470 });
    expect(() => parseListenAddress('--metrics', '9471')).toThrow("Expected 'host:port' (IPv6 as '[addr]:port') for --metrics");
    expect(() => parseListenAddress('--metrics', 'h:99999')).toThrow(/port in \[0, 65535\]/);
  });
});

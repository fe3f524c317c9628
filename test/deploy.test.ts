// Tests for deploy/: the Grafana dashboard, the Prometheus scrape config and alerts query only metrics the
// code registers (so they cannot drift from src/metrics), the dashboard shows every covenant series, and
// the systemd units carry the settings the design asks for and pass `systemd-analyze verify`.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GRACEFUL_STOP_SECONDS } from '../src/lifecycle';
import { createCoordinatorMetrics, createWorkerMetrics, MetricsRegistry } from '../src/metrics';
import type { MetricKind } from '../src/metrics/registry';

const ROOT = path.resolve(__dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const read = (rel: string) => fs.readFileSync(path.join(DEPLOY, rel), 'utf8');

// Every metric either role registers, with its kind (default process metrics included).
const KINDS = new Map<string, MetricKind>();
for (const registry of [
  createWorkerMetrics(new MetricsRegistry({ role: 'worker' })).registry,
  createCoordinatorMetrics(new MetricsRegistry({ role: 'coordinator' })).registry,
]) {
  for (const n of registry.names()) KINDS.set(n, registry.kind(n)!);
}
// covenant's own series (not Node's default process metrics).
const OWN = [...KINDS.keys()].filter((n) => !/^covenant_(process|nodejs)_/.test(n));

/** The registered metric a series name in a query refers to: itself, or a histogram's _bucket/_sum/_count. */
function metricOf(series: string): { metric: string; kind: MetricKind } | undefined {
  const k = KINDS.get(series);
  if (k) return { metric: series, kind: k };
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  if (m && KINDS.get(m[1]) === 'histogram') return { metric: m[1], kind: 'histogram' };
  return undefined;
}

/** Problems with the covenant series one PromQL expression uses; returns the metrics it uses. */
function checkQuery(expr: string, where: string, problems: string[]): string[] {
  const used: string[] = [];
  for (const [series] of expr.matchAll(/\bcovenant_[a-z0-9_]+/g)) {
    const m = metricOf(series);
    if (!m) {
      problems.push(`${where}: ${series} is not a metric the code registers`);
      continue;
    }
    used.push(m.metric);
  }
  // rate()/increase() only make sense on counters and on histogram _bucket/_sum/_count series.
  for (const [, fn, series] of expr.matchAll(/\b(rate|irate|increase)\(\s*(covenant_[a-z0-9_]+)/g)) {
    const m = metricOf(series);
    if (m && m.kind === 'gauge') problems.push(`${where}: ${fn}() of the gauge ${series}`);
    if (m && m.kind === 'histogram' && series === m.metric) problems.push(`${where}: ${fn}() of the histogram ${series} needs _bucket, _sum or _count`);
  }
  for (const [, inner] of expr.matchAll(/histogram_quantile\(\s*[\d.]+\s*,([^\n]*)/g)) {
    const s = /covenant_[a-z0-9_]+/.exec(inner)?.[0];
    if (s && !(s.endsWith('_bucket') && metricOf(s)?.kind === 'histogram')) problems.push(`${where}: histogram_quantile over ${s}, not a histogram's _bucket`);
  }
  return used;
}

// js-yaml comes with jest (a dev dependency's dependency); without it the YAML structure checks are
// skipped and the metric-name checks, which read the text, still run.
function loadYaml(): ((s: string) => unknown) | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return (require('js-yaml') as { load: (s: string) => unknown }).load;
  } catch {
    return undefined;
  }
}
const yamlLoad = loadYaml();

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

describe('Grafana dashboard', () => {
  const dash = JSON.parse(read('grafana/covenant.json')) as {
    schemaVersion: number;
    uid: string;
    title: string;
    templating: { list: Array<{ name: string; type: string; query: unknown }> };
    panels: Array<{ id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { uid: string }; targets?: Array<{ expr: string; refId: string; datasource?: { uid: string } }> }>;
  };
  const panels = dash.panels.filter((p) => p.type !== 'row');

  test('is a current-schema dashboard with datasource, job, role and instance variables', () => {
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dash.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    const vars = new Map(dash.templating.list.map((v) => [v.name, v]));
    expect(vars.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const v of ['job', 'role', 'instance']) expect(vars.get(v)?.type).toBe('query');
    const ids = dash.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.datasource?.uid).toBe('${datasource}');
      expect(p.targets?.length).toBeGreaterThan(0);
      for (const t of p.targets!) expect(t.datasource?.uid).toBe('${datasource}');
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  test('queries only registered metrics, correctly typed, and shows every covenant series', () => {
    const problems: string[] = [];
    const used = new Set<string>();
    for (const p of panels) for (const t of p.targets!) for (const m of checkQuery(t.expr, `panel "${p.title}" ${t.refId}`, problems)) used.add(m);
    for (const v of dash.templating.list) {
      const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | null)?.query;
      if (q) checkQuery(q, `variable ${v.name}`, problems);
    }
    expect(problems).toEqual([]);
    expect(OWN.filter((n) => !used.has(n))).toEqual([]);
    // The list: throughput, loss, step and round timing, all-reduce, busbw, bytes, compression,
    // membership, failures, resyncs.
    const titles = panels.map((p) => p.title);
    for (const t of ['Throughput', 'Loss', 'Inner step time', 'Round duration', 'All-reduce time', 'Bus bandwidth', 'Bytes on the wire', 'Compression ratio', 'Members', 'Joins, leaves, drops', 'All-reduce failures by reason', 'Resyncs by reason']) {
      expect(titles).toContain(t);
    }
  });

  test('the drift check catches an unknown metric and a rate() of a gauge', () => {
    const problems: string[] = [];
    checkQuery('rate(covenant_train_loss[5m]) + covenant_train_typo_total', 'x', problems);
    checkQuery('histogram_quantile(0.9, rate(covenant_train_tokens_total[5m]))', 'y', problems);
    expect(problems).toEqual([
      'x: covenant_train_typo_total is not a metric the code registers',
      'x: rate() of the gauge covenant_train_loss',
      'y: histogram_quantile over covenant_train_tokens_total, not a histogram\'s _bucket',
    ]);
  });
});

describe('Prometheus files', () => {
  const scrapeText = read('prometheus/prometheus.yml');
  const alertsText = read('prometheus/alerts.yml');

  test('every covenant name in them is registered', () => {
    const problems: string[] = [];
    checkQuery(scrapeText, 'prometheus.yml', problems);
    checkQuery(alertsText, 'alerts.yml', problems);
    expect(problems).toEqual([]);
  });

  (yamlLoad ? test : test.skip)('prometheus.yml scrapes a coordinator and workers on the env example ports, and loads alerts.yml', () => {
    const cfg = yamlLoad!(scrapeText) as { rule_files: string[]; scrape_configs: Array<{ job_name: string; metrics_path: string; static_configs: Array<{ targets: string[] }> }> };
    expect(cfg.rule_files).toContain('alerts.yml');
    const jobs = new Map(cfg.scrape_configs.map((j) => [j.job_name, j]));
    const env = read('systemd/covenant.env.example');
    const port = (name: string) => new RegExp(`^${name}=.*:(\\d+)$`, 'm').exec(env)![1];
    for (const [job, envName] of [['covenant-coordinator', 'COVENANT_COORDINATOR_METRICS'], ['covenant-worker', 'COVENANT_WORKER_METRICS']]) {
      const j = jobs.get(job)!;
      expect(j.metrics_path).toBe('/metrics');
      const targets = j.static_configs.flatMap((s) => s.targets);
      expect(targets.length).toBeGreaterThan(0);
      for (const t of targets) expect(t.endsWith(`:${port(envName)}`)).toBe(true);
    }
  });

  (yamlLoad ? test : test.skip)('alerts.yml: the alerts that matter, each with expr, for, severity and summary', () => {
    const doc = yamlLoad!(alertsText) as { groups: Array<{ name: string; rules: Array<{ alert: string; expr: string; for: string; labels: { severity: string }; annotations: { summary: string; description: string } }> }> };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(expect.arrayContaining(['CovenantNoRoundCommitted', 'CovenantWorkerAllReduceFailing', 'CovenantMembersBelowMinimum', 'CovenantProcessDown']));
    for (const r of rules) {
      expect(r.alert).toMatch(/^Covenant[A-Za-z]+$/);
      expect(typeof r.expr).toBe('string');
      expect(r.for).toMatch(/^\d+[smh]$/);
      expect(['warning', 'critical']).toContain(r.labels.severity);
      expect(r.annotations.summary.length).toBeGreaterThan(0);
      expect(r.annotations.description.length).toBeGreaterThan(0);
    }
  });

  const promtool = which('promtool');
  (promtool ? test : test.skip)('promtool accepts the config and the rules', () => {
    execFileSync(promtool!, ['check', 'config', path.join(DEPLOY, 'prometheus/prometheus.yml')], { stdio: 'pipe' });
    execFileSync(promtool!, ['check', 'rules', path.join(DEPLOY, 'prometheus/alerts.yml')], { stdio: 'pipe' });
  });
  if (!promtool) console.log('deploy.test: promtool not found; the config and rules are checked with js-yaml only');
});

type Unit = Map<string, Map<string, string[]>>;

/** A systemd unit file as section → key → values (a key may repeat); comments and blank lines dropped. */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#') || t.startsWith(';')) continue;
    const s = /^\[(\w+)\]$/.exec(t);
    if (s) {
      section = new Map();
      unit.set(s[1], section);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(t);
    if (!kv || !section) throw new Error(`not a unit line: ${line}`);
    section.set(kv[1], [...(section.get(kv[1]) ?? []), kv[2]]);
  }
  return unit;
}

describe('systemd units', () => {
  const names = ['covenant-worker', 'covenant-coordinator'];
  const env = read('systemd/covenant.env.example');
  const envNames = new Set([...env.matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));

  test.each(names)('%s has the restart policy, stop bound, user, state directory and hardening', (name) => {
    const unit = parseUnit(read(`systemd/${name}.service`));
    const svc = unit.get('Service')!;
    const one = (k: string) => {
      const v = svc.get(k);
      if (v === undefined || v.length !== 1) throw new Error(`${name}: expected one ${k}=, found ${v?.length ?? 0}`);
      return v[0];
    };
    expect(one('Restart')).toBe('on-failure');
    expect(one('RestartSec')).toMatch(/^\d+s$/);
    expect(unit.get('Unit')!.get('StartLimitBurst')).toBeDefined();
    expect(one('KillSignal')).toBe('SIGTERM');
    expect(one('TimeoutStopSec')).toBe(`${GRACEFUL_STOP_SECONDS}s`);
    expect(one('User')).toBe('covenant');
    const role = name.replace('covenant-', '');
    expect(one('StateDirectory')).toBe(`covenant/${role}`);
    expect(one('ReadWritePaths')).toBe(`/var/lib/covenant/${role}`);
    expect(one('EnvironmentFile')).toBe('/etc/covenant/covenant.env');
    for (const [k, v] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['CapabilityBoundingSet', ''], ['RestrictSUIDSGID', 'yes']]) {
      expect([k, one(k)]).toEqual([k, v]);
    }
    expect(svc.has('MemoryDenyWriteExecute')).toBe(false); // V8's JIT
    const exec = one('ExecStart');
    expect(exec.startsWith(`/usr/bin/covenant ${role} `)).toBe(true);
    expect(exec).toContain(`--state /var/lib/covenant/${role}`);
    // Every ${VAR} ExecStart uses is set by the environment file.
    const vars = [...exec.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g)].map((m) => m[1]);
    expect(vars.length).toBeGreaterThan(0);
    for (const v of vars) expect([v, envNames.has(v)]).toEqual([v, true]);
    // …and so is every $VAR it splits into words (extra flags).
    for (const m of exec.matchAll(/\$([A-Z_][A-Z0-9_]*)(?![A-Z0-9_{])/g)) expect([m[1], envNames.has(m[1])]).toEqual([m[1], true]);
    expect(unit.get('Install')!.get('WantedBy')).toEqual(['multi-user.target']);
  });

  // systemd-analyze verify checks that ExecStart's program exists. /usr/bin/covenant is not installed on
  // a build machine, so the test verifies copies whose ExecStart runs `/usr/bin/env covenant …` instead
  // (the same command line through env, which exists wherever systemd does); nothing else changes.
  const analyze = which('systemd-analyze');
  (analyze ? test : test.skip)('systemd-analyze verify passes on both units, without a warning', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-units-'));
    try {
      const files = names.map((name) => {
        const text = read(`systemd/${name}.service`);
        const copy = text.replace(/^ExecStart=\/usr\/bin\/covenant /m, 'ExecStart=/usr/bin/env covenant ');
        expect(copy).not.toBe(text);
        const f = path.join(dir, `${name}.service`);
        fs.writeFileSync(f, copy);
        return f;
      });
      const r = spawnSync(analyze!, ['verify', '--man=no', ...files], { encoding: 'utf8', timeout: 60_000 });
      expect({ status: r.status, output: `${r.stdout}${r.stderr}`.trim() }).toEqual({ status: 0, output: '' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  if (!analyze) console.log('deploy.test: systemd-analyze not found; skipping `systemd-analyze verify` of the units (apt-get install systemd provides it)');

  const sysusers = which('systemd-sysusers');
  (sysusers ? test : test.skip)('the sysusers.d file declares the covenant user (dry run in an empty root)', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-sysusers-'));
    try {
      fs.mkdirSync(path.join(root, 'etc'));
      const r = spawnSync(sysusers!, [`--root=${root}`, '--dry-run', path.join(DEPLOY, 'systemd/covenant.sysusers')], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status).toBe(0);
      expect(r.stdout + r.stderr).toMatch(/Creating user '?covenant'?/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

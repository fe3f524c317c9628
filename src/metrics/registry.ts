// The process's Prometheus registry: one prom-client Registry per process (never prom-client's global
// default), every name checked against covenant's conventions when the metric is created, the role as a
// const label on every series, and Node's default process metrics under the same `covenant_` prefix.
//
// Naming rules (refused with a RangeError that names the metric and the fix):
//   - lowercase snake_case, `covenant_` prefix, no colons (they are for recording rules);
//   - base units spelled out: `_seconds`, `_bytes` (never ms, KiB, minutes, percent …); ratios are 0..N;
//   - counters end in `_total`, nothing else does; histograms end in `_seconds` or `_bytes`;
//   - no name ends in a suffix the exposition itself adds (`_bucket`, `_count`, `_sum`, `_created`).
// Label rules: every label declares its closed set of values at creation (cardinality is the product of
// those sets, at most MAX_SERIES_PER_METRIC), and names that identify a peer, host, round or step
// (`peer_id`, `addr`, `round`, …) are refused: one series per peer or per round grows without bound. Put
// such values in a log event instead.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export const METRIC_PREFIX = 'covenant_';
export const ROLES = ['worker', 'coordinator'] as const;
export type Role = (typeof ROLES)[number];

/** Most series one labelled metric may have (product of its label value sets). */
export const MAX_SERIES_PER_METRIC = 32;

/** Every label of a metric with its closed set of values: `{ reason: ['timeout', 'closed'] }`. */
export type LabelSpec<L extends string> = { readonly [K in L]: readonly string[] };

export interface MetricSpec<L extends string> {
  name: string;
  help: string;
  labels?: LabelSpec<L>;
}

export interface GaugeSpec<L extends string> extends MetricSpec<L> {
  /** Runs at every scrape before the value is read: set the gauge from a live source here. */
  collect?: (gauge: Gauge<L>) => void;
}

export interface HistogramSpec<L extends string> extends MetricSpec<L> {
  /** Upper bounds in the metric's unit, strictly increasing (+Inf is added by prom-client). */
  buckets: readonly number[];
}

export type MetricKind = 'counter' | 'gauge' | 'histogram';

// Unit words that are not base units, as whole underscore-separated tokens of a name.
const NON_BASE_UNITS: Record<string, string> = {
  ms: 'seconds', millis: 'seconds', milliseconds: 'seconds', us: 'seconds', micros: 'seconds',
  microseconds: 'seconds', ns: 'seconds', nanos: 'seconds', nanoseconds: 'seconds', sec: 'seconds',
  secs: 'seconds', minute: 'seconds', minutes: 'seconds', hour: 'seconds', hours: 'seconds', day: 'seconds',
  days: 'seconds', kb: 'bytes', mb: 'bytes', gb: 'bytes', tb: 'bytes', kib: 'bytes', mib: 'bytes',
  gib: 'bytes', tib: 'bytes', kilobytes: 'bytes', megabytes: 'bytes', gigabytes: 'bytes', bit: 'bytes',
  bits: 'bytes', percent: 'a ratio (0..1)', pct: 'a ratio (0..1)', percentage: 'a ratio (0..1)',
};
const RESERVED_SUFFIXES = ['_bucket', '_count', '_sum', '_created'];
const HISTOGRAM_UNITS = ['_seconds', '_bytes'];
// Label names Prometheus or this registry set, or that the exposition format reserves.
const RESERVED_LABELS = ['le', 'quantile', 'role', 'instance', 'job'];
// Tokens of label names whose values are unbounded: a peer's identity or address, or a round/step number.
const UNBOUNDED_LABEL_TOKENS = [
  'peer', 'peers', 'peerid', 'node', 'host', 'hostname', 'ip', 'addr', 'address', 'endpoint', 'id', 'uuid',
  'key', 'pubkey', 'rank', 'user', 'round', 'step', 'attempt', 'epoch', 'timestamp', 'time',
];

function bad(name: string, why: string): RangeError {
  return new RangeError(`Metric name ${JSON.stringify(name)} is invalid: ${why}`);
}

/**
 * Throws a RangeError (TypeError for a non-string) naming the metric and the fix when `name` breaks
 * covenant's naming rules for a metric of `kind`. Exported so other tools can check names the same way.
 */
export function checkMetricName(kind: MetricKind, name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new TypeError(`Expected a string for the metric name but received ${typeof name}`);
  if (!/^[a-z][a-z0-9_]*$/.test(name) || name.includes('__') || name.endsWith('_')) {
    throw bad(name, 'use lowercase snake_case: [a-z][a-z0-9_]*, no double or trailing underscore, no colon');
  }
  if (!name.startsWith(METRIC_PREFIX) || name.length === METRIC_PREFIX.length) {
    throw bad(name, `every covenant metric starts with ${JSON.stringify(METRIC_PREFIX)} (e.g. ${METRIC_PREFIX}${name.replace(/^covenant_?/, '') || 'thing_total'})`);
  }
  const tokens = name.slice(METRIC_PREFIX.length).split('_');
  for (const t of tokens) {
    const base = NON_BASE_UNITS[t];
    if (base !== undefined) throw bad(name, `"${t}" is not a base unit; use ${base} in the name and in the value`);
  }
  for (const s of RESERVED_SUFFIXES) {
    if (name.endsWith(s)) throw bad(name, `the suffix ${s} is added by the exposition format (histograms); choose another name`);
  }
  if (kind === 'counter' && !name.endsWith('_total')) throw bad(name, 'a counter ends in _total (e.g. …_bytes_total)');
  if (kind !== 'counter' && name.endsWith('_total')) {
    throw bad(name, `only counters end in _total; a ${kind} that counts something is a counter`);
  }
  if (kind === 'histogram' && !HISTOGRAM_UNITS.some((u) => name.endsWith(u))) {
    throw bad(name, `a histogram ends in its base unit (${HISTOGRAM_UNITS.join(' or ')}), e.g. …_duration_seconds`);
  }
}

/** Checks label names and their value sets; returns the number of series the metric can have. */
export function checkLabels(metric: string, labels: LabelSpec<string> | undefined): number {
  if (labels === undefined) return 1;
  if (typeof labels !== 'object' || labels === null) throw new TypeError(`labels of ${metric} must be an object { label: [values] }`);
  let series = 1;
  for (const [label, values] of Object.entries(labels)) {
    const where = `label ${JSON.stringify(label)} of ${metric}`;
    if (!/^[a-z][a-z0-9_]*$/.test(label)) throw new RangeError(`${where} is invalid: use lowercase snake_case`);
    if (RESERVED_LABELS.includes(label)) {
      throw new RangeError(`${where} is reserved (${RESERVED_LABELS.join(', ')} are set by Prometheus or by this registry)`);
    }
    const unbounded = label.split('_').find((t) => UNBOUNDED_LABEL_TOKENS.includes(t));
    if (unbounded !== undefined) {
      throw new RangeError(
        `${where} is refused: "${unbounded}" names a peer, host, round or step, which makes one series per value ` +
          '(unbounded cardinality); record it in a log event instead',
      );
    }
    if (!Array.isArray(values) || values.length === 0 || values.some((v) => typeof v !== 'string' || v === '')) {
      throw new TypeError(`${where} must list its values as a non-empty array of non-empty strings`);
    }
    if (new Set(values).size !== values.length) throw new RangeError(`${where} lists a value twice`);
    series *= values.length;
  }
  if (series > MAX_SERIES_PER_METRIC) {
    throw new RangeError(`${metric} could have ${series} series (more than ${MAX_SERIES_PER_METRIC}); use fewer labels or values`);
  }
  return series;
}

function checkHelp(name: string, help: unknown): string {
  if (typeof help !== 'string' || help.trim() === '') throw new TypeError(`${name} needs a help text (a non-empty string)`);
  return help;
}

// Every combination of the declared label values, so labelled counters exist (at 0) from the start.
function combinations<L extends string>(labels: LabelSpec<L>): Array<Record<L, string>> {
  let out: Array<Record<string, string>> = [{}];
  for (const [label, values] of Object.entries(labels) as Array<[string, readonly string[]]>) {
    out = out.flatMap((c) => values.map((v) => ({ ...c, [label]: v })));
  }
  return out as Array<Record<L, string>>;
}

export interface MetricsRegistryOptions {
  role: Role;
  /** Register Node's default process metrics (CPU, memory, event-loop lag, GC, fds) as covenant_process_… and covenant_nodejs_…; default true. */
  defaultMetrics?: boolean;
}

/** A prom-client Registry that enforces covenant's conventions; the subsystem modules create their metrics through it. */
export class MetricsRegistry {
  readonly role: Role;
  /** The underlying prom-client registry (for exposition; create metrics through this class). */
  readonly prom: Registry;
  private readonly kinds = new Map<string, MetricKind>();

  constructor(opts: MetricsRegistryOptions) {
    if (typeof opts !== 'object' || opts === null) throw new TypeError('MetricsRegistry needs { role }');
    if (!ROLES.includes(opts.role)) {
      throw new RangeError(`Expected 'worker' or 'coordinator' for role but received ${JSON.stringify(opts.role)}`);
    }
    this.role = opts.role;
    this.prom = new Registry();
    this.prom.setDefaultLabels({ role: this.role });
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.prom, prefix: METRIC_PREFIX });
    for (const m of this.prom.getMetricsAsArray()) {
      const t = String(m.type);
      this.kinds.set(m.name, t === 'counter' ? 'counter' : t === 'histogram' ? 'histogram' : 'gauge');
    }
  }

  private claim(kind: MetricKind, name: unknown, help: unknown, labels: LabelSpec<string> | undefined): void {
    checkMetricName(kind, name);
    checkHelp(name, help);
    checkLabels(name, labels);
    if (this.kinds.has(name)) {
      throw new RangeError(`Metric ${name} is already registered; create each metric once per process (one subsystem module owns it)`);
    }
    this.kinds.set(name, kind);
  }

  counter<L extends string = never>(spec: MetricSpec<L>): Counter<L> {
    this.claim('counter', spec.name, spec.help, spec.labels);
    const labels = spec.labels;
    const c = new Counter<L>({ name: spec.name, help: spec.help, labelNames: labels ? (Object.keys(labels) as L[]) : [], registers: [this.prom] });
    if (labels) for (const l of combinations(labels)) c.inc(l as never, 0);
    return c;
  }

  gauge<L extends string = never>(spec: GaugeSpec<L>): Gauge<L> {
    this.claim('gauge', spec.name, spec.help, spec.labels);
    const labels = spec.labels;
    const read = spec.collect;
    return new Gauge<L>({
      name: spec.name,
      help: spec.help,
      labelNames: labels ? (Object.keys(labels) as L[]) : [],
      registers: [this.prom],
      ...(read ? { collect(this: Gauge<L>) { read(this); } } : {}),
    });
  }

  histogram<L extends string = never>(spec: HistogramSpec<L>): Histogram<L> {
    this.claim('histogram', spec.name, spec.help, spec.labels);
    const b = spec.buckets;
    if (!Array.isArray(b) || b.length === 0 || b.some((x, i) => typeof x !== 'number' || !Number.isFinite(x) || (i > 0 && x <= b[i - 1]))) {
      throw new RangeError(`buckets of ${spec.name} must be finite numbers in strictly increasing order`);
    }
    const labels = spec.labels;
    const h = new Histogram<L>({ name: spec.name, help: spec.help, buckets: [...b], labelNames: labels ? (Object.keys(labels) as L[]) : [], registers: [this.prom] });
    if (labels) for (const l of combinations(labels)) h.zero(l as never);
    return h;
  }

  /** Names of every metric family registered (sorted), the default process metrics included. */
  names(): string[] {
    return [...this.kinds.keys()].sort();
  }

  /** The kind of a registered metric, or undefined. */
  kind(name: string): MetricKind | undefined {
    return this.kinds.get(name);
  }

  /** Prometheus text exposition of every metric. */
  metrics(): Promise<string> {
    return this.prom.metrics();
  }

  /** Content-Type of metrics(): the Prometheus text format 0.0.4. */
  get contentType(): string {
    return this.prom.contentType;
  }
}

let processRegistry: MetricsRegistry | undefined;

/**
 * Creates this process's registry (once; a second call with the same role returns it, with another role
 * throws). The CLI calls it at start with the command's role; subsystems then use processMetricsRegistry().
 */
export function initProcessRegistry(role: Role): MetricsRegistry {
  if (processRegistry !== undefined) {
    if (processRegistry.role !== role) {
      throw new Error(`This process's metrics registry was created for role ${processRegistry.role}, not ${role}; one process has one role`);
    }
    return processRegistry;
  }
  processRegistry = new MetricsRegistry({ role });
  return processRegistry;
}

/** This process's registry; throws if initProcessRegistry(role) has not run yet. */
export function processMetricsRegistry(): MetricsRegistry {
  if (processRegistry === undefined) throw new Error('No metrics registry yet: call initProcessRegistry(role) when the process starts');
  return processRegistry;
}

/** For the subsystem helpers: `v` as a finite number ≥ 0, else a TypeError/RangeError naming it. */
export function nonNegative(name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`Expected a finite number >= 0 for ${name} but received ${typeof v}`);
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`Expected a finite number >= 0 for ${name} but received ${v}`);
  return v;
}

/** For the subsystem helpers: `v` as a non-negative safe integer, else a TypeError/RangeError naming it. */
export function count(name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`Expected an integer >= 0 for ${name} but received ${typeof v}`);
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`Expected an integer >= 0 for ${name} but received ${v}`);
  return v;
}

/**
 * A value source read at scrape time (a gauge's collect()): its result, or NaN when it is unset, throws
 * or returns something that is not a number, so a broken source shows as a gap rather than a stale value
 * or a failed scrape.
 */
export function readSource(source: (() => number) | undefined, fallback: number): number {
  if (source === undefined) return fallback;
  try {
    const v = source();
    return typeof v === 'number' ? v : NaN;
  } catch {
    return NaN;
  }
}

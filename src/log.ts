// Structured logs: one JSON object per line on stdout, `{time, level, event, ...fields}`, which systemd's
// journal keeps as is (`journalctl -u covenant-worker -o cat | jq`). No dependency.
//
// Events are short dotted names, stable for tools to match (the message is the fields): round.start,
// round.plan, round.commit, allreduce.failure, member.join, member.leave, member.drop, state.resync,
// metrics.listen, … A child logger binds fields (role, peerId, round) to every line it writes.
//
// Values: Errors become { name, message, code?, stack? }; bigint a string; NaN and ±Infinity the strings
// "NaN", "Infinity", "-Infinity" (JSON has no such numbers, and a NaN loss is news); undefined fields are
// left out; a circular reference becomes "[Circular]". A field named time, level or event does not
// overwrite the line's own: it is written as field_time, field_level, field_event.

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RESERVED = new Set(['time', 'level', 'event']);

export interface LogSink {
  write(line: string): unknown;
}

export interface LoggerOptions {
  /** Lowest level written; default COVENANT_LOG_LEVEL or 'info'. */
  level?: LogLevel;
  /** Where lines go; default process.stdout. */
  stream?: LogSink;
  /** Fields bound to every line. */
  fields?: LogFields;
  /** Clock for `time` (tests); default Date.now. */
  now?: () => number;
}

/** Checks a level name: a RangeError naming `name` and the levels when it is not one. */
export function parseLogLevel(name: string, raw: unknown): LogLevel {
  if (typeof raw === 'string' && (LOG_LEVELS as readonly string[]).includes(raw.toLowerCase())) return raw.toLowerCase() as LogLevel;
  throw new RangeError(`Expected one of ${LOG_LEVELS.join(', ')} for ${name} but received ${JSON.stringify(raw)}`);
}

function serializeError(e: Error): LogFields {
  const out: LogFields = { name: e.name, message: e.message };
  const code = (e as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (e.stack !== undefined) out.stack = e.stack;
  if (e.cause !== undefined) out.cause = e.cause instanceof Error ? e.cause.message : e.cause;
  return out;
}

/** JSON of one log record, never throwing (see the value rules at the top of the file). */
function stringify(record: LogFields): string {
  // Objects on the path from the root to the value being written: a value among them is a cycle (an
  // object merely referenced twice is written twice).
  const ancestors: unknown[] = [];
  return JSON.stringify(record, function replacer(this: unknown, _key: string, value: unknown) {
    if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
    if (typeof value === 'bigint') return value.toString();
    if (typeof value !== 'object' || value === null) return value;
    while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
    if (ancestors.includes(value)) return '[Circular]';
    const out = value instanceof Error ? serializeError(value) : value;
    ancestors.push(out);
    return out;
  });
}

export class Logger {
  readonly level: LogLevel;
  private readonly stream: LogSink;
  private readonly bound: LogFields;
  private readonly now: () => number;

  constructor(opts: LoggerOptions = {}) {
    this.level = opts.level ?? (process.env.COVENANT_LOG_LEVEL ? parseLogLevel('COVENANT_LOG_LEVEL', process.env.COVENANT_LOG_LEVEL) : 'info');
    if (!(LOG_LEVELS as readonly string[]).includes(this.level)) parseLogLevel('level', this.level);
    this.stream = opts.stream ?? process.stdout;
    this.bound = { ...(opts.fields ?? {}) };
    this.now = opts.now ?? Date.now;
  }

  /** A logger that adds `fields` to every line (after this logger's own bound fields, overriding them). */
  child(fields: LogFields): Logger {
    return new Logger({ level: this.level, stream: this.stream, fields: { ...this.bound, ...fields }, now: this.now });
  }

  /** Whether a line at `level` would be written. */
  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level];
  }

  log(level: LogLevel, event: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    if (typeof event !== 'string' || event === '') throw new TypeError('A log event needs a name (a non-empty string such as "round.commit")');
    const record: LogFields = { time: new Date(this.now()).toISOString(), level, event };
    for (const src of [this.bound, fields ?? {}]) {
      for (const [k, v] of Object.entries(src)) {
        if (v === undefined) continue;
        record[RESERVED.has(k) ? `field_${k}` : k] = v;
      }
    }
    let line: string;
    try {
      line = stringify(record);
    } catch (e) {
      // A getter that throws, or a toJSON that does: keep the event, say what was lost.
      line = stringify({ time: record.time, level, event, log_error: `fields not serializable: ${e instanceof Error ? e.message : String(e)}` });
    }
    this.stream.write(`${line}\n`);
  }

  debug(event: string, fields?: LogFields): void {
    this.log('debug', event, fields);
  }

  info(event: string, fields?: LogFields): void {
    this.log('info', event, fields);
  }

  warn(event: string, fields?: LogFields): void {
    this.log('warn', event, fields);
  }

  error(event: string, fields?: LogFields): void {
    this.log('error', event, fields);
  }
}

/** A JSON-lines logger on stdout (or opts.stream). */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return new Logger(opts);
}

// Tests for the JSON-lines logger: one parseable object per line, levels, bound fields in children,
// values JSON cannot hold, and reserved keys that fields cannot overwrite.
import { createLogger, LogSink, parseLogLevel } from '../src/log';

function capture(): LogSink & { lines: () => Array<Record<string, unknown>>; raw: string[] } {
  const raw: string[] = [];
  return {
    raw,
    write: (s: string) => raw.push(s),
    lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>),
  };
}

const now = () => Date.UTC(2026, 10, 28, 12, 0, 0, 250);

describe('Logger', () => {
  test('one JSON object per line: time, level, event first, then fields', () => {
    const out = capture();
    const log = createLogger({ stream: out, now });
    log.info('round.commit', { round: 12, members: 4, loss: 3.25 });
    expect(out.raw).toEqual(['{"time":"2026-11-28T12:00:00.250Z","level":"info","event":"round.commit","round":12,"members":4,"loss":3.25}\n']);
  });

  test('levels below the logger level are dropped', () => {
    const out = capture();
    const log = createLogger({ stream: out, now, level: 'warn' });
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    expect(out.lines().map((l) => [l.level, l.event])).toEqual([['warn', 'c'], ['error', 'd']]);
    expect(log.enabled('info')).toBe(false);
    expect(() => createLogger({ level: 'loud' as never })).toThrow(/debug, info, warn, error for level/);
    expect(parseLogLevel('COVENANT_LOG_LEVEL', 'DEBUG')).toBe('debug');
    expect(() => parseLogLevel('COVENANT_LOG_LEVEL', 'verbose')).toThrow(/for COVENANT_LOG_LEVEL but received "verbose"/);
  });

  test('a child binds fields to every line; call fields win over bound ones', () => {
    const out = capture();
    const root = createLogger({ stream: out, now, fields: { role: 'worker' } });
    const peer = root.child({ peerId: 'ab12', round: 1 });
    peer.info('allreduce.failure', { round: 2, reason: 'timeout' });
    root.info('metrics.listen');
    expect(out.lines()).toEqual([
      { time: '2026-11-28T12:00:00.250Z', level: 'info', event: 'allreduce.failure', role: 'worker', peerId: 'ab12', round: 2, reason: 'timeout' },
      { time: '2026-11-28T12:00:00.250Z', level: 'info', event: 'metrics.listen', role: 'worker' },
    ]);
  });

  test('errors, non-finite numbers, bigint, undefined, cycles and reserved keys', () => {
    const out = capture();
    const log = createLogger({ stream: out, now });
    const err = Object.assign(new Error('ring broke', { cause: new Error('peer 2 died') }), { code: 'COMM_CLOSED' });
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const shared = { x: 1 };
    log.error('allreduce.failure', { error: err, loss: NaN, lr: Infinity, bytes: 10n, gone: undefined, cyclic, twice: [shared, shared], event: 'mine', time: 3 });
    expect(out.raw).toHaveLength(1);
    expect(out.raw[0].endsWith('\n')).toBe(true);
    expect(out.raw[0].indexOf('\n')).toBe(out.raw[0].length - 1);
    const l = out.lines()[0];
    expect(l.event).toBe('allreduce.failure');
    expect(l.time).toBe('2026-11-28T12:00:00.250Z');
    expect(l.field_event).toBe('mine');
    expect(l.field_time).toBe(3);
    const e = l.error as Record<string, unknown>;
    expect([e.name, e.message, e.code, e.cause]).toEqual(['Error', 'ring broke', 'COMM_CLOSED', 'peer 2 died']);
    expect(typeof e.stack).toBe('string');
    expect([l.loss, l.lr, l.bytes]).toEqual(['NaN', 'Infinity', '10']);
    expect('gone' in l).toBe(false);
    expect(l.cyclic).toEqual({ a: 1, self: '[Circular]' });
    expect(l.twice).toEqual([{ x: 1 }, { x: 1 }]);
  });

  test('an unserializable field keeps the event and says so', () => {
    const out = capture();
    const log = createLogger({ stream: out, now });
    log.warn('odd', { bad: { toJSON: () => { throw new Error('nope'); } } });
    expect(out.lines()[0]).toEqual({ time: '2026-11-28T12:00:00.250Z', level: 'warn', event: 'odd', log_error: 'fields not serializable: nope' });
    expect(() => log.info('')).toThrow(/needs a name/);
  });
});

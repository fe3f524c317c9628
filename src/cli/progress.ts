// Training progress: a one-line bar on a terminal; JSON lines (one event per line) when stdout is not a
// TTY, e.g. under systemd, whose journal keeps them.

export interface ProgressSink {
  step(e: { step: number; totalSteps: number; loss: number; lr: number; tokensPerSecond: number; gradNorm: number }): void;
  event(name: string, fields: Record<string, unknown>): void;
  done(): void;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

export function createProgress(stream: NodeJS.WriteStream = process.stdout, tty = stream.isTTY === true): ProgressSink {
  const started = Date.now();
  let startStep: number | undefined;
  let onBar = false;
  const write = (line: string) => stream.write(line);
  if (!tty) {
    return {
      step: (e) => write(`${JSON.stringify({ event: 'step', ...e, time: new Date().toISOString() })}\n`),
      event: (name, fields) => write(`${JSON.stringify({ event: name, ...fields, time: new Date().toISOString() })}\n`),
      done: () => undefined,
    };
  }
  return {
    step(e) {
      if (startStep === undefined) startStep = e.step - 1;
      const done = e.step - startStep;
      const elapsed = (Date.now() - started) / 1000;
      const eta = (elapsed / done) * (e.totalSteps - e.step);
      const width = 24;
      const filled = Math.round((width * e.step) / e.totalSteps);
      const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? '>' : '') + ' '.repeat(width - filled);
      const line = `step ${e.step}/${e.totalSteps} [${bar}] loss ${e.loss.toFixed(4)} | lr ${e.lr.toExponential(2)} | ${Math.round(e.tokensPerSecond)} tok/s | ETA ${formatDuration(eta)}`;
      write(`\r${line}\x1b[K`);
      onBar = true;
    },
    event(name, fields) {
      if (onBar) write('\n');
      onBar = false;
      const parts = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : String(v)}`);
      write(`${name}: ${parts.join(', ')}\n`);
    },
    done() {
      if (onBar) write('\n');
      onBar = false;
    },
  };
}

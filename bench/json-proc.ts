// A child process that speaks JSON lines on stdout (one object per line), for benches that drive several
// processes at once (the all-reduce ranks, the gloo peer). Every child is killed when the bench exits,
// normally or through a signal handler that calls process.exit.
import { ChildProcess, spawn } from 'node:child_process';

import { Row } from './row';

const live = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** Installs SIGINT/SIGTERM handlers that exit (so 'exit' handlers run: children killed, namespaces
 * removed) until the returned function is called. */
export function exitOnSignals(): () => void {
  const handler = (sig: NodeJS.Signals) => process.exit(sig === 'SIGINT' ? 130 : 143);
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

export class JsonLineProc {
  readonly proc: ChildProcess;
  private readonly lines: Row[] = [];
  private readonly waiters: Array<{ resolve: (r: Row) => void; reject: (e: Error) => void }> = [];
  private buf = '';
  private errText = '';
  private exitInfo: string | undefined;
  readonly exited: Promise<number | null>;

  constructor(readonly name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
    if (!hooked) {
      process.on('exit', killAll);
      hooked = true;
    }
    this.proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this.proc);
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line.startsWith('{')) continue;
        const row = JSON.parse(line) as Row;
        const w = this.waiters.shift();
        if (w) w.resolve(row);
        else this.lines.push(row);
      }
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.errText = (this.errText + d.toString()).slice(-4000);
    });
    this.proc.stdin!.on('error', () => undefined);  // EPIPE after the child died: reported by exit
    this.exited = new Promise((resolve) => {
      this.proc.on('error', (e) => {
        this.finish(`cannot run ${cmd}: ${e.message}`);
        resolve(null);
      });
      this.proc.on('exit', (code, signal) => {
        this.finish(signal ? `killed by ${signal}` : `exited with ${code}`);
        resolve(code);
      });
    });
  }

  private finish(why: string): void {
    live.delete(this.proc);
    this.exitInfo = why;
    const err = new Error(`${this.name} ${why} before answering${this.errText ? `; its stderr ends:\n${this.errText.trim()}` : ''}`);
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** stderr so far (its last 4000 characters). */
  get stderr(): string {
    return this.errText;
  }

  send(obj: object): void {
    this.proc.stdin!.write(`${JSON.stringify(obj)}\n`);
  }

  /** The next JSON line; rejects when the child exits first or after timeoutMs. */
  next(timeoutMs: number): Promise<Row> {
    const ready = this.lines.shift();
    if (ready) return Promise.resolve(ready);
    if (this.exitInfo) {
      return Promise.reject(new Error(`${this.name} ${this.exitInfo}${this.errText ? `; its stderr ends:\n${this.errText.trim()}` : ''}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.resolve === done);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`${this.name} did not answer within ${Math.round(timeoutMs / 1000)} s${this.errText ? `; its stderr ends:\n${this.errText.trim()}` : ''}`));
      }, timeoutMs);
      const done = (r: Row) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.waiters.push({ resolve: done, reject: (e) => {
        clearTimeout(timer);
        reject(e);
      } });
    });
  }

  /** Closes stdin and waits for the exit; kills the child after graceMs. */
  async close(graceMs = 5000): Promise<void> {
    if (this.exitInfo) return;
    this.proc.stdin!.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (!this.exitInfo) this.proc.kill('SIGKILL');
  }
}

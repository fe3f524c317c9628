// A coordinator and workers as child processes on loopback, each the real `covenant` CLI: what the demo,
// the multi-process tests and the convergence bench run. Every child's stdout is JSON lines (src/log.ts);
// they are parsed and handed to `onLine`, and the few events the launcher itself needs (the coordinator's
// port, metrics URLs, commits, exits) are tracked here.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import { datasetInfo } from '../data/loader';
import { RunConfig } from './run-config';

/** The CLI entry point next to this module in dist/. */
export const CLI_MAIN = path.resolve(__dirname, '..', 'cli', 'main.js');

export type LogLine = Record<string, unknown> & { event?: string; level?: string };

export interface LocalSwarmOptions {
  /** Working directory: run.json, coord/, worker state dirs, logs. */
  dir: string;
  /** Prepared data (covenant data prepare); its manifest hash goes into the run config. */
  dataDir: string;
  /** Run config fields (runId, manifestSha256 are filled in when absent). */
  config: Record<string, unknown>;
  /** Compute threads per worker (default 1). */
  threadsPerWorker?: number;
  /** Serve /metrics on a free loopback port for every process (default false). */
  metrics?: boolean;
  /** Every parsed log line of every child, with the child's name ('coordinator', 'w1', …). */
  onLine?: (name: string, line: LogLine) => void;
  /** Extra `covenant worker` flags (e.g. ['--eval-every', '0']). */
  workerArgs?: string[];
  /** Environment of the children (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** 'fetch': each worker starts with an empty data directory of its own and fetches shards from the coordinator. */
  workerData?: 'shared' | 'fetch';
  /** Start the coordinator with --data (default true): it serves shards and runs useful-work checks itself. */
  coordinatorData?: boolean;
}

export interface StartWorkerOptions {
  /** Extra environment of this worker (e.g. the test-only hostile switch). */
  env?: NodeJS.ProcessEnv;
  /** Extra `covenant worker` flags of this worker (after the swarm's workerArgs). */
  args?: string[];
  /** This worker's data directory (default: workerDataDir(name)). */
  dataDir?: string;
}

export interface ChildInfo {
  name: string;
  proc: ChildProcess;
  /** Set from the child's metrics.listen line. */
  metricsUrl?: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  lines: LogLine[];
}

export class LocalSwarm {
  readonly o: LocalSwarmOptions;
  readonly runId: string;
  readonly configFile: string;
  readonly coordinatorState: string;
  coordinator: ChildInfo | undefined;
  coordinatorPort = 0;
  readonly workers = new Map<string, ChildInfo>();
  #counter = 0;

  constructor(o: LocalSwarmOptions) {
    const manifestSha256 = datasetInfo(o.dataDir).manifestHash;
    this.o = o;
    fs.mkdirSync(o.dir, { recursive: true });
    this.runId = (o.config.runId as string | undefined) ?? `local-${process.pid}`;
    this.configFile = path.join(o.dir, 'run.json');
    this.coordinatorState = path.join(o.dir, 'coordinator');
    fs.writeFileSync(this.configFile, JSON.stringify({ ...o.config, runId: this.runId, manifestSha256: o.config.manifestSha256 ?? manifestSha256 }, null, 2));
  }

  #spawn(name: string, args: string[], env?: NodeJS.ProcessEnv): ChildInfo {
    const proc = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...(this.o.env ?? process.env), ...env } });
    const lines: LogLine[] = [];
    const info: ChildInfo = {
      name,
      proc,
      lines,
      exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal }))),
    };
    const log = fs.createWriteStream(path.join(this.o.dir, `${name}.log`), { flags: 'a' });
    const onText = (text: string, stream: 'stdout' | 'stderr') => {
      log.write(`${text}\n`);
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { event: stream === 'stderr' ? 'stderr' : 'stdout', text };
      }
      lines.push(line);
      if (line.event === 'metrics.listen' && typeof line.url === 'string') info.metricsUrl = line.url;
      this.o.onLine?.(name, line);
    };
    readline.createInterface({ input: proc.stdout! }).on('line', (t) => onText(t, 'stdout'));
    readline.createInterface({ input: proc.stderr! }).on('line', (t) => onText(t, 'stderr'));
    void info.exited.then(() => log.end());
    return info;
  }

  /** Starts the coordinator (again, after a kill: same state directory and port) and waits until it listens. */
  async startCoordinator(timeoutMs = 30_000): Promise<void> {
    const listen = `127.0.0.1:${this.coordinatorPort}`;
    const args = ['coordinator', '--config', this.configFile, '--state', this.coordinatorState, '--listen', listen, ...(this.o.coordinatorData === false ? [] : ['--data', this.o.dataDir])];
    if (this.o.metrics) args.push('--metrics', '127.0.0.1:0');
    const c = this.#spawn('coordinator', args);
    this.coordinator = c;
    const line = await this.waitFor('coordinator', (l) => l.event === 'coordinator.listening', timeoutMs);
    this.coordinatorPort = line.port as number;
  }

  /** Starts a worker (a new one, or `name` again with its state directory) and returns its name. */
  startWorker(name = `w${++this.#counter}`, opts: StartWorkerOptions = {}): string {
    const running = this.workers.get(name);
    if (running && running.proc.exitCode === null && running.proc.signalCode === null) throw new Error(`worker ${name} is still running (one state directory, one process)`);
    const args = [
      'worker',
      '--join', `127.0.0.1:${this.coordinatorPort}`,
      '--run-id', this.runId,
      '--data', opts.dataDir ?? this.workerDataDir(name),
      '--state', this.workerStateDir(name),
      '--listen', '127.0.0.1:0',
      '--threads', String(this.o.threadsPerWorker ?? 1),
      ...(this.o.metrics ? ['--metrics', '127.0.0.1:0'] : []),
      ...(this.o.workerArgs ?? []),
      ...(opts.args ?? []),
    ];
    this.workers.set(name, this.#spawn(name, args, opts.env));
    return name;
  }

  /** The state directory of worker `name` (its identity key lives there). */
  workerStateDir(name: string): string {
    return path.join(this.o.dir, name);
  }

  /** The data directory worker `name` runs with. */
  workerDataDir(name: string): string {
    return this.o.workerData === 'fetch' ? path.join(this.o.dir, `${name}-data`) : this.o.dataDir;
  }

  /** The last `n` log lines of every process of the swarm, one block per process, with exit status: what a
   * failed wait reports, so a failure seen only in CI carries what each process was doing. */
  recentLines(n = 6): string {
    const all = [...(this.coordinator ? [this.coordinator] : []), ...this.workers.values()];
    return all.map((c) => {
      const state = c.proc.exitCode !== null || c.proc.signalCode !== null ? ` (exited: ${c.proc.exitCode ?? c.proc.signalCode})` : '';
      const tail = c.lines.slice(-n).map((l) => `    ${JSON.stringify(l)}`).join('\n');
      return `  ${c.name}${state}, ${c.lines.length} lines:\n${tail}`;
    }).join('\n');
  }

  child(name: string): ChildInfo {
    const c = name === 'coordinator' ? this.coordinator : this.workers.get(name);
    if (!c) throw new Error(`no process named ${name} in this swarm`);
    return c;
  }

  /** Resolves with the first line (already seen or future) of `name` that matches, or rejects after timeoutMs or when the process exits. */
  waitFor(name: string, match: (l: LogLine) => boolean, timeoutMs = 60_000, fromIndex = 0): Promise<LogLine> {
    const c = this.child(name);
    return new Promise((resolve, reject) => {
      let done = false;
      let seen = fromIndex;
      const check = () => {
        for (; seen < c.lines.length; seen++) {
          if (match(c.lines[seen])) {
            finish();
            resolve(c.lines[seen]);
            return true;
          }
        }
        return false;
      };
      const timer = setInterval(() => void check(), 50);
      const deadline = setTimeout(() => {
        finish();
        reject(new Error(`${name}: no matching log line within ${timeoutMs} ms (last: ${JSON.stringify(c.lines.slice(-3))})\n${this.recentLines()}`));
      }, timeoutMs);
      void c.exited.then((x) => {
        if (done || check()) return;
        finish();
        reject(new Error(`${name} exited (code ${x.code}, signal ${x.signal}) before the awaited log line; last: ${JSON.stringify(c.lines.slice(-3))}`));
      });
      const finish = () => {
        done = true;
        clearInterval(timer);
        clearTimeout(deadline);
      };
      check();
    });
  }

  /** Sends `signal` and waits for the exit. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const c = this.child(name);
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill(signal);
    return c.exited;
  }

  /** SIGTERM to every worker, then the coordinator; SIGKILL whatever is left after graceMs. */
  async stop(graceMs = 20_000): Promise<void> {
    const all = [...this.workers.keys()];
    const force = setTimeout(() => {
      for (const c of [...this.workers.values(), this.coordinator]) c?.proc.kill('SIGKILL');
    }, graceMs);
    await Promise.all(all.map((n) => this.kill(n, 'SIGTERM')));
    if (this.coordinator) await this.kill('coordinator', 'SIGTERM');
    clearTimeout(force);
  }

  /** The committed rounds the coordinator has saved (its rounds.jsonl). */
  committedRounds(): Array<{ round: number; thetaSha256: string; members: string[]; meanLoss: number | null; tokens: number }> {
    const file = path.join(this.coordinatorState, 'rounds.jsonl');
    if (!fs.existsSync(file)) return [];
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.endsWith('}'))
      .map((l) => JSON.parse(l));
  }
}

/** A run config for a local swarm: the given fields over quick-round defaults. */
export function localRunConfig(fields: Partial<Omit<RunConfig, 'model'>> & { model?: unknown; vocabSize?: number }): Record<string, unknown> {
  return {
    model: 'tiny',
    seed: 7,
    innerSteps: 20,
    batchSize: 4,
    seqLen: 64,
    innerLr: 3e-3,
    planDelayMs: 1000,
    minMembers: 1,
    heartbeatTimeoutMs: 3000,
    allreduceTimeoutMs: 3000,
    roundDeadlineMs: 60_000,
    ...fields,
  };
}

// The swarm demo's view model: a state object fed by the children's JSON log lines (`applyLine`), and pure
// functions from that state to terminal lines: the live table (`renderView`), one line per event for plain
// output (`describeEvent`) and the closing summary (`summarize`, `renderSummary`). Nothing here touches a
// process or a terminal.

export type LogLine = Record<string, unknown> & { event?: string; level?: string };

export interface WorkerView {
  name: string;
  peerId?: string;
  /** What the last event said: starting, joined, inner, allreduce, committed, resync, killed, … */
  state: string;
  /** The round last started or committed. */
  round?: number;
  /** Mean inner loss of the last committed round. */
  loss?: number;
  /** Tokens of the last committed round over its seconds. */
  tokensPerSecond?: number;
  metricsUrl?: string;
  /** Times this name was started again after a kill. */
  restarts: number;
}

export interface RoundView {
  round: number;
  /** Ring size of the latest plan attempt. */
  members: number;
  attempts: number;
  plannedMs?: number;
  committedMs?: number;
  /** Per reporting worker: bytes it sent in the all-reduce. */
  bytesSent: number[];
  meanLosses: number[];
  valLoss?: number;
}

export interface DemoState {
  preset: string;
  numParams: number;
  /** innerSteps × batchSize × seqLen: tokens one worker trains on per round. */
  tokensPerRound: number;
  targetRounds: number;
  startedMs: number;
  coordinatorUrl?: string;
  workers: Map<string, WorkerView>;
  /** By round number. */
  rounds: Map<number, RoundView>;
  /** Short notes on churn and failures, newest last. */
  notes: string[];
}

export function newDemoState(o: { preset: string; numParams: number; tokensPerRound: number; targetRounds: number; startedMs: number }): DemoState {
  return { ...o, workers: new Map(), rounds: new Map(), notes: [] };
}

/** ring all-reduce bytes one member sends for n fp32 parameters among `members`: 2(N−1)/N × 4n. */
export function fp32WireBytes(numParams: number, members: number): number {
  return members < 2 ? 0 : (2 * (members - 1) * 4 * numParams) / members;
}

/** Rounds the coordinator has committed. */
export function committedRounds(s: DemoState): RoundView[] {
  return [...s.rounds.values()].filter((r) => r.committedMs !== undefined).sort((a, b) => a.round - b.round);
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const lineMs = (l: LogLine): number => {
  const t = typeof l.time === 'string' ? Date.parse(l.time) : NaN;
  return Number.isFinite(t) ? t : Date.now();
};

function roundView(s: DemoState, round: number): RoundView {
  let r = s.rounds.get(round);
  if (!r) s.rounds.set(round, (r = { round, members: 0, attempts: 0, bytesSent: [], meanLosses: [] }));
  return r;
}

export function note(s: DemoState, text: string): void {
  s.notes.push(text);
  if (s.notes.length > 50) s.notes.splice(0, s.notes.length - 50);
}

/** A worker process started (again) under `name`. */
export function workerStarted(s: DemoState, name: string): void {
  const w = s.workers.get(name);
  if (w) {
    w.state = 'starting';
    w.restarts++;
  } else {
    s.workers.set(name, { name, state: 'starting', restarts: 0 });
  }
}

/** A process of the swarm exited; `killed` when the demo killed it on purpose. */
export function processExited(s: DemoState, name: string, code: number | null, signal: string | null, killed: boolean): void {
  const w = s.workers.get(name);
  if (!w) return;
  if (killed) w.state = 'killed';
  else if (w.state !== 'stopped') w.state = signal ? `exit ${signal}` : `exit ${code}`;
}

/** The /metrics page of a metrics server's base URL. */
export function metricsPage(url: string): string {
  return url.endsWith('/metrics') ? url : `${url.replace(/\/$/, '')}/metrics`;
}

/** Folds one log line of process `name` ('coordinator', 'w1', …) into the state. */
export function applyLine(s: DemoState, name: string, l: LogLine): void {
  if (l.event === 'metrics.listen' && typeof l.url === 'string') {
    const url = metricsPage(l.url);
    if (name === 'coordinator') s.coordinatorUrl = url;
    else if (s.workers.has(name)) s.workers.get(name)!.metricsUrl = url;
    return;
  }
  if (name === 'coordinator') {
    const round = num(l.round);
    if (round === undefined) return;
    if (l.event === 'round.plan' || l.event === 'round.replan') {
      const r = roundView(s, round);
      r.plannedMs ??= lineMs(l);
      r.members = Array.isArray(l.ring) ? l.ring.length : r.members;
      r.attempts = Math.max(r.attempts, (num(l.attempt) ?? 0) + 1);
    } else if (l.event === 'round.commit') {
      roundView(s, round).committedMs = lineMs(l);
    }
    return;
  }
  const w = s.workers.get(name);
  if (!w) return;
  const round = num(l.round);
  switch (l.event) {
    case 'worker.join':
      w.peerId = typeof l.peerId === 'string' ? l.peerId : w.peerId;
      w.state = 'joined';
      break;
    case 'round.start':
      w.state = 'inner';
      w.round = round;
      break;
    case 'allreduce.start':
      w.state = 'allreduce';
      break;
    case 'round.commit': {
      w.state = 'committed';
      w.round = round;
      w.loss = num(l.meanLoss);
      const seconds = num(l.seconds);
      if (seconds && seconds > 0) w.tokensPerSecond = s.tokensPerRound / seconds;
      if (round !== undefined) {
        const r = roundView(s, round);
        const bytes = num(l.bytesSent);
        if (bytes !== undefined) r.bytesSent.push(bytes);
        if (w.loss !== undefined) r.meanLosses.push(w.loss);
        r.valLoss ??= num(l.valLoss);
        if (!r.members) r.members = num(l.members) ?? 0;
      }
      break;
    }
    case 'round.sit-out':
      w.state = 'sit-out';
      break;
    case 'round.replan':
      w.state = 'replan';
      note(s, `${name}: round ${round} re-planned (attempt ${num(l.attempt)}, ring of ${num(l.ring)})`);
      break;
    case 'allreduce.failed':
      w.state = 'ar-failed';
      note(s, `${name}: all-reduce of round ${round} failed (${String(l.code ?? l.error ?? '?')})`);
      break;
    case 'round.abandon':
    case 'round.dropped':
      w.state = 'dropped';
      break;
    case 'state.resync':
      w.state = 'resync';
      w.round = round;
      note(s, `${name}: resynced to round ${round} (${String(l.reason ?? '')})`);
      break;
    case 'worker.stopping':
    case 'worker.signal':
      w.state = 'stopping';
      break;
    case 'worker.stop':
      w.state = 'stopped';
      break;
    default:
      if (l.level === 'error') {
        w.state = 'error';
        note(s, `${name}: ${String(l.event)} ${String(l.error ?? l.text ?? '')}`.trim());
      }
  }
}

export function formatBytes(b: number): string {
  if (b >= 1e9) return `${(b / 1e9).toFixed(2)} GB`;
  if (b >= 1e6) return `${(b / 1e6).toFixed(1)} MB`;
  if (b >= 1e3) return `${(b / 1e3).toFixed(1)} kB`;
  return `${Math.round(b)} B`;
}

const mean = (xs: number[]): number | undefined => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);
const f3 = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(3));

/** Seconds from a round's first plan to its commit. */
export function roundSeconds(r: RoundView): number | undefined {
  return r.plannedMs !== undefined && r.committedMs !== undefined ? (r.committedMs - r.plannedMs) / 1000 : undefined;
}

/** The live table: workers, the last `lastRounds` rounds, metrics URLs and recent notes. */
export function renderView(s: DemoState, nowMs: number, lastRounds = 5): string[] {
  const done = committedRounds(s);
  const elapsed = Math.round((nowMs - s.startedMs) / 1000);
  const lines = [
    `covenant demo: ${s.workers.size} worker(s), preset ${s.preset} (${(s.numParams / 1e6).toFixed(1)}M parameters), round ${done.length}/${s.targetRounds}, ${elapsed}s`,
    '',
    `${'worker'.padEnd(7)}${'peer'.padEnd(10)}${'state'.padEnd(11)}${'round'.padStart(5)}${'loss'.padStart(8)}${'tok/s'.padStart(8)}  metrics`,
  ];
  for (const w of s.workers.values()) {
    lines.push(
      `${w.name.padEnd(7)}${(w.peerId?.slice(0, 8) ?? '-').padEnd(10)}${w.state.padEnd(11)}${String(w.round ?? '-').padStart(5)}${f3(w.loss).padStart(8)}` +
        `${(w.tokensPerSecond === undefined ? '-' : Math.round(w.tokensPerSecond).toString()).padStart(8)}  ${w.metricsUrl ?? ''}`,
    );
  }
  lines.push('', `${'round'.padEnd(7)}${'members'.padStart(7)}${'time'.padStart(8)}${'wire/worker'.padStart(13)}${'fp32'.padStart(10)}${'train'.padStart(8)}${'val'.padStart(8)}`);
  for (const r of done.slice(-lastRounds)) {
    const secs = roundSeconds(r);
    const sent = mean(r.bytesSent);
    lines.push(
      `${String(r.round).padEnd(7)}${String(r.members).padStart(7)}${(secs === undefined ? '-' : `${secs.toFixed(1)}s`).padStart(8)}` +
        `${(sent === undefined ? '-' : formatBytes(sent)).padStart(13)}${formatBytes(fp32WireBytes(s.numParams, r.members)).padStart(10)}` +
        `${f3(mean(r.meanLosses)).padStart(8)}${f3(r.valLoss).padStart(8)}`,
    );
  }
  if (!done.length) lines.push('(waiting for the first commit)');
  if (s.coordinatorUrl) lines.push('', `coordinator metrics: ${s.coordinatorUrl}`);
  if (s.notes.length) lines.push('', ...s.notes.slice(-4));
  return lines;
}

/** One line for plain output, or undefined when the line is not worth printing. */
export function describeEvent(s: DemoState, name: string, l: LogLine): string | undefined {
  const w = s.workers.get(name);
  switch (l.event) {
    case 'metrics.listen':
      return `${name}: metrics at ${metricsPage(String(l.url))}`;
    case 'coordinator.listening':
      return `coordinator: listening on ${String(l.address)}`;
    case 'worker.join':
      return `${name}: joined as ${String(l.peerId).slice(0, 8)} at round ${String(l.round)}`;
    case 'round.plan':
      return name === 'coordinator' ? `round ${String(l.round)}: planned, ${Array.isArray(l.ring) ? l.ring.length : '?'} member(s)` : undefined;
    case 'round.commit': {
      if (name === 'coordinator') {
        const r = s.rounds.get(num(l.round) ?? -1);
        const secs = r && roundSeconds(r);
        return `round ${String(l.round)}: committed${secs === undefined ? '' : ` in ${secs.toFixed(1)}s`}`;
      }
      const val = num(l.valLoss);
      const fp32 = fp32WireBytes(s.numParams, num(l.members) ?? 0);
      return (
        `${name}: round ${String(l.round)} loss ${f3(num(l.meanLoss))}${val === undefined ? '' : ` val ${val.toFixed(3)}`}` +
        ` ${(num(l.seconds) ?? 0).toFixed(1)}s ${w?.tokensPerSecond === undefined ? '' : `${Math.round(w.tokensPerSecond)} tok/s `}` +
        `sent ${formatBytes(num(l.bytesSent) ?? 0)} (fp32 ${formatBytes(fp32)})`
      );
    }
    case 'round.replan':
    case 'allreduce.failed':
    case 'state.resync':
      return name === 'coordinator' ? `coordinator: ${l.event} round ${String(l.round)}` : s.notes[s.notes.length - 1];
    case 'member.drop':
      return `coordinator: dropped ${String(l.peerId).slice(0, 8)} (silent ${String(l.silentMs)} ms)`;
    case 'worker.stop':
      return `${name}: stopped at round ${String(l.round)}`;
    default:
      return l.level === 'error' ? `${name}: ${String(l.event)} ${String(l.error ?? l.text ?? '')}` : undefined;
  }
}

export interface DemoSummary {
  rounds: number;
  firstVal?: { round: number; loss: number };
  lastVal?: { round: number; loss: number };
  /** Mean over committed rounds of the mean bytes a worker sent. */
  bytesPerWorkerRound: number;
  fp32PerWorkerRound: number;
  /** Σ over every worker's commit report of (fp32 − sent). */
  bytesSaved: number;
  bytesSent: number;
  /** Per committed round: mean train loss and val loss, for the picture. */
  curve: Array<{ round: number; train?: number; val?: number }>;
}

export function summarize(s: DemoState): DemoSummary {
  const done = committedRounds(s);
  const withVal = done.filter((r) => r.valLoss !== undefined);
  let sent = 0;
  let fp32 = 0;
  const perRoundSent: number[] = [];
  const perRoundFp32: number[] = [];
  for (const r of done) {
    if (!r.bytesSent.length) continue;
    sent += r.bytesSent.reduce((a, b) => a + b, 0);
    fp32 += r.bytesSent.length * fp32WireBytes(s.numParams, r.members);
    perRoundSent.push(mean(r.bytesSent)!);
    perRoundFp32.push(fp32WireBytes(s.numParams, r.members));
  }
  const first = withVal[0];
  const last = withVal[withVal.length - 1];
  return {
    rounds: done.length,
    firstVal: first && { round: first.round, loss: first.valLoss! },
    lastVal: last && { round: last.round, loss: last.valLoss! },
    bytesPerWorkerRound: mean(perRoundSent) ?? 0,
    fp32PerWorkerRound: mean(perRoundFp32) ?? 0,
    bytesSaved: fp32 - sent,
    bytesSent: sent,
    curve: done.map((r) => ({ round: r.round, train: mean(r.meanLosses), val: r.valLoss })),
  };
}

export function renderSummary(x: DemoSummary): string[] {
  const val =
    x.firstVal && x.lastVal
      ? `val loss ${x.firstVal.loss.toFixed(3)} (round ${x.firstVal.round}) → ${x.lastVal.loss.toFixed(3)} (round ${x.lastVal.round})`
      : 'val loss: no evaluation reported';
  const ratio = x.bytesPerWorkerRound > 0 ? ` (${(x.fp32PerWorkerRound / x.bytesPerWorkerRound).toFixed(1)}× less)` : '';
  return [
    `summary: ${x.rounds} round(s) committed; ${val}`,
    `wire: ${formatBytes(x.bytesPerWorkerRound)} sent per worker per round vs ${formatBytes(x.fp32PerWorkerRound)} in fp32${ratio}; ` +
      `${formatBytes(x.bytesSaved)} saved in all (${formatBytes(x.bytesSent)} sent)`,
  ];
}

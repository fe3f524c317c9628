// `covenant demo` (what `npm start` runs): a coordinator and N workers as child processes on loopback (the
// real `covenant coordinator` / `covenant worker` commands, via LocalSwarm) train one model together in
// DiLoCo rounds on the Brown corpus, byte-tokenized. A live table (or one line per event with --plain),
// optional churn (SIGKILL a random worker every few rounds and start it or a fresh one again), then a
// summary and a loss-curve SVG. Ctrl-C stops the swarm gracefully and still prints the summary.
import fs from 'node:fs';
import path from 'node:path';
import { formatUsage, parseArgs } from './args';
import { CliIO, defaultIO } from './io';
import {
  applyLine,
  committedRounds,
  DemoState,
  describeEvent,
  newDemoState,
  note,
  processExited,
  renderSummary,
  renderView,
  summarize,
  workerStarted,
} from './demo-view';
import { lossCurveSvg } from './loss-svg';
import { prepareData } from '../data/prepare';
import { MANIFEST_FILE } from '../data/manifest';
import { LocalSwarm, localRunConfig, LogLine } from '../swarm/local-swarm';
import { presetConfig } from '../train/model-config';
import { numParams } from '../train/param-layout';

/** Byte-level tokens: 256 bytes and an end-of-text token. */
const VOCAB = 257;

/**
 * Round shape per preset, chosen so a round takes seconds with one thread per worker on a small machine:
 * `small` (10.8M parameters) with 3 workers on 2 cores commits a round in about 7-13 s. The all-reduce
 * timeout covers the skew between members finishing their inner steps; under churn it is also how long a
 * round waits for a killed peer before re-planning without it.
 */
const ROUND_SHAPE = {
  tiny: { innerSteps: 20, batchSize: 8, seqLen: 64, innerLr: 3e-3, allreduceTimeoutMs: 5000 },
  small: { innerSteps: 10, batchSize: 4, seqLen: 64, innerLr: 1e-3, allreduceTimeoutMs: 15_000 },
  gpt2: { innerSteps: 5, batchSize: 2, seqLen: 64, innerLr: 6e-4, allreduceTimeoutMs: 30_000 },
} as const;

export const DEMO_SPEC = {
  dir: { type: 'string', default: '.covenant-demo', valueName: 'DIR', description: 'working directory: data in DIR/brown-bytes, the swarm in DIR/swarm (cleared each run)' },
  preset: { type: 'string', choices: ['tiny', 'small', 'gpt2'], default: 'small', description: 'model preset; a round is inner steps × batch × tokens of tiny 20×8×64, small 10×4×64 (10-20 s on 2 cores), gpt2 5×2×64' },
  workers: { type: 'int', min: 1, max: 64, default: 3, valueName: 'N', description: 'worker processes' },
  rounds: { type: 'int', min: 1, default: 10, valueName: 'N', description: 'stop after the coordinator has committed N rounds' },
  churn: { type: 'bool', description: 'SIGKILL a random worker every --churn-every rounds and start it (or a fresh one) again' },
  churnEvery: { type: 'int', min: 1, default: 3, valueName: 'N', description: 'rounds between churn kills' },
  threads: { type: 'int', min: 1, default: 1, valueName: 'N', description: 'compute threads per worker' },
  out: { type: 'string', valueName: 'FILE', description: 'loss-curve picture (default DIR/loss.svg)' },
  plain: { type: 'bool', description: 'one line per event instead of the live table (automatic when stdout is not a terminal)' },
  help: { type: 'bool', description: 'print this help' },
} as const;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** No commit for this long means the swarm is stuck: the demo stops with an error. */
const STALL_MS = 300_000;

export async function runDemo(argv: string[], io: CliIO = defaultIO, tty = process.stdout.isTTY === true): Promise<number> {
  const a = parseArgs(argv, DEMO_SPEC);
  if (a.help) {
    io.out(formatUsage('covenant demo [flags]', DEMO_SPEC));
    return 0;
  }
  const preset = a.preset as keyof typeof ROUND_SHAPE;
  const shape = ROUND_SHAPE[preset];
  const live = tty && !a.plain;
  const out = a.out ?? path.join(a.dir, 'loss.svg');

  // Data: Brown with the byte tokenizer (vocab 257 keeps `small` at ~10M parameters).
  const dataDir = path.join(a.dir, 'brown-bytes');
  if (!fs.existsSync(path.join(dataDir, MANIFEST_FILE))) {
    io.out(`demo: preparing the Brown corpus with the bytes tokenizer into ${dataDir}`);
    await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir });
  }
  const swarmDir = path.join(a.dir, 'swarm');
  fs.rmSync(swarmDir, { recursive: true, force: true });

  const params = numParams(presetConfig(preset, VOCAB));
  const state = newDemoState({
    preset,
    numParams: params,
    tokensPerRound: shape.innerSteps * shape.batchSize * shape.seqLen,
    targetRounds: a.rounds,
    startedMs: Date.now(),
  });
  const print = (line: string) => {
    if (!live) io.out(line);
  };
  const swarm = new LocalSwarm({
    dir: swarmDir,
    dataDir,
    threadsPerWorker: a.threads,
    metrics: true,
    config: localRunConfig({
      model: preset,
      vocabSize: VOCAB,
      ...shape,
      compression: 'int8',
      // Under churn a round goes on without the killed worker.
      minMembers: a.churn ? Math.max(1, a.workers - 1) : a.workers,
      heartbeatTimeoutMs: 5000,
      roundDeadlineMs: 120_000,
      // The validator checks one member's useful work per round: enough to show it, light on a small machine.
      verifyMembers: 1,
      verifyBatches: 8,
    }),
    onLine: (name: string, line: LogLine) => {
      const before = state.workers.get(name)?.state;
      applyLine(state, name, line);
      if (line.event === 'worker.stop' && before === 'stopped') return; // the worker logs its stop twice
      const text = describeEvent(state, name, line);
      if (text !== undefined) print(text);
    },
  });
  io.out(
    `demo: ${a.workers} worker(s) train the ${preset} preset (${(params / 1e6).toFixed(1)}M parameters, int8 all-reduce) for ${a.rounds} round(s)` +
      ` of ${shape.innerSteps} inner steps × ${shape.batchSize}×${shape.seqLen} tokens; logs in ${swarmDir}`,
  );

  // Ctrl-C: a graceful stop and the summary; a second Ctrl-C kills everything.
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) {
      for (const c of [...swarm.workers.values(), swarm.coordinator]) c?.proc.kill('SIGKILL');
      process.exit(130);
    }
    interrupted = true;
    note(state, 'interrupted: stopping the swarm (Ctrl-C again to kill it)');
    print('demo: interrupted, stopping the swarm (Ctrl-C again to kill it)');
  };
  process.on('SIGINT', onSigint);

  let stopping = false;
  const killedByUs = new Set<object>();
  const start = (name?: string): string => {
    const n = swarm.startWorker(name);
    workerStarted(state, n);
    const child = swarm.child(n);
    void child.exited.then((x) => {
      processExited(state, n, x.code, x.signal, killedByUs.has(child));
      if (killedByUs.has(child) || stopping) return;
      const text = `${n}: exited (code ${x.code}, signal ${x.signal}); see ${path.join(swarmDir, `${n}.log`)}`;
      note(state, text);
      print(text);
    });
    return n;
  };

  let frame = 0;
  const redraw = () => {
    if (!live) return;
    const cols = process.stdout.columns || 100;
    const lines = renderView(state, Date.now()).map((l) => (l.length > cols - 1 ? l.slice(0, cols - 1) : l));
    process.stdout.write(`${frame ? `\x1b[${frame}A\r` : ''}\x1b[J${lines.join('\n')}\n`);
    frame = lines.length;
  };
  const timer = setInterval(redraw, 500);

  let failure: string | undefined;
  try {
    await swarm.startCoordinator();
    for (let i = 0; i < a.workers; i++) start();

    let lastCommit = Date.now();
    let seen = 0;
    let nextChurn = a.churnEvery;
    while (!interrupted) {
      const done = committedRounds(state).length;
      if (done > seen) {
        seen = done;
        lastCommit = Date.now();
      }
      if (done >= a.rounds) break;
      const c = swarm.coordinator!;
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) {
        failure = `the coordinator exited (code ${c.proc.exitCode}, signal ${c.proc.signalCode}); see ${path.join(swarmDir, 'coordinator.log')}`;
        break;
      }
      if (Date.now() - lastCommit > STALL_MS) {
        failure = `no round committed for ${STALL_MS / 1000} s; see the logs in ${swarmDir}`;
        break;
      }
      if (a.churn && done >= nextChurn) {
        nextChurn = done + a.churnEvery;
        await churn(swarm, state, killedByUs, (name) => (stopping ? undefined : start(name)), print);
      }
      await sleep(200);
    }
    // Let the workers report the last round (val loss) before stopping them.
    const last = committedRounds(state).at(-1);
    if (!interrupted && !failure && last) {
      const until = Date.now() + 30_000;
      while (Date.now() < until && !interrupted && last.bytesSent.length < last.members) await sleep(200);
    }
  } catch (e) {
    failure = e instanceof Error ? e.message : String(e);
  } finally {
    stopping = true;
    note(state, 'stopping the swarm');
    redraw();
    await swarm.stop();
    clearInterval(timer);
    redraw();
    process.off('SIGINT', onSigint);
  }

  const summary = summarize(state);
  for (const line of renderSummary(summary)) io.out(line);
  if (summary.curve.length) {
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
    const pts = (k: 'train' | 'val') => summary.curve.filter((c) => c[k] !== undefined).map((c): [number, number] => [c.round, c[k]!]);
    fs.writeFileSync(
      out,
      lossCurveSvg({
        title: `covenant demo: ${preset} preset, ${a.workers} worker(s), Brown corpus (bytes)`,
        xLabel: 'round',
        integerX: true,
        yLabel: 'loss (nats per byte)',
        series: [
          { name: 'mean train loss', color: '#1f77b4', points: pts('train') },
          { name: 'val loss', color: '#d62728', points: pts('val') },
        ],
      }),
    );
    io.out(`loss curve: ${out}`);
  }
  if (failure) {
    io.err(`demo: ${failure}`);
    return 1;
  }
  return interrupted ? 130 : 0;
}

/** Kills a random live worker with SIGKILL and, after a moment, starts the same name (its state directory: the same peer) or a fresh one. */
async function churn(
  swarm: LocalSwarm,
  state: DemoState,
  killedByUs: Set<object>,
  start: (name?: string) => string | undefined,
  print: (line: string) => void,
): Promise<void> {
  const live = [...state.workers.values()].filter((w) => !['killed', 'stopped'].includes(w.state) && !w.state.startsWith('exit'));
  if (!live.length) return;
  const victim = live[Math.floor(Math.random() * live.length)].name;
  const child = swarm.child(victim);
  killedByUs.add(child);
  const text = `churn: SIGKILL ${victim}`;
  note(state, text);
  print(text);
  await swarm.kill(victim, 'SIGKILL');
  setTimeout(() => {
    const same = Math.random() < 0.5;
    const name = start(same ? victim : undefined);
    if (name === undefined) return;
    const msg = same ? `churn: ${victim} started again (same state, same peer)` : `churn: fresh worker ${name} started`;
    note(state, msg);
    print(msg);
  }, 2000);
}

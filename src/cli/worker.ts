// `covenant worker`: joins a run's coordinator and trains in its rounds until SIGTERM/SIGINT, then leaves
// gracefully (the round in flight is abandoned, the committed state saved) and exits 0 within
// GRACEFUL_STOP_SECONDS. Refusals a restart cannot fix (wrong run, wrong data) exit 2, so systemd's
// RestartPreventExitStatus=2 stops retrying them.
import { formatUsage, parseArgs, UsageError } from './args';
import { CliIO, defaultIO } from './io';
import { GRACEFUL_STOP_SECONDS } from '../lifecycle';
import { createLogger } from '../log';
import { parseListenAddress } from '../metrics/http';
import { Worker, WorkerConfigError } from '../diloco/worker';

export const WORKER_SPEC = {
  join: { type: 'string', required: true, valueName: 'HOST:PORT', description: "the coordinator's gRPC address" },
  'run-id': { type: 'string', required: true, valueName: 'ID', description: 'the run to join (the coordinator refuses another)' },
  data: { type: 'string', required: true, valueName: 'DIR', description: 'prepared data (covenant data prepare); its manifest must be the run\'s' },
  state: { type: 'string', required: true, valueName: 'DIR', description: 'state directory (identity key, θ, optimizer state, residual); a restart resumes from it' },
  listen: { type: 'string', default: '0.0.0.0:7471', valueName: 'HOST:PORT', description: 'where the all-reduce listens (port 0: a free port)' },
  advertise: { type: 'string', valueName: 'HOST:PORT', description: 'the address peers reach the all-reduce at (needed when --listen is 0.0.0.0)' },
  metrics: { type: 'string', valueName: 'HOST:PORT', description: 'serve /metrics, /healthz and /readyz here (default: off)' },
  'serve-data': { type: 'string', valueName: 'HOST:PORT', description: 'serve the shards this worker holds to other members here (port 0: a free port; default: off)' },
  threads: { type: 'int', valueName: 'N', description: 'compute threads (default: all cores)' },
  device: { type: 'string', default: 'cpu', choices: ['cpu', 'cuda'], valueName: 'cpu|cuda', description: 'where the engine trains; cuda keeps Δ and its int8 compression on the GPU (exit 2 without one)' },
  rounds: { type: 'int', valueName: 'N', description: 'leave after N committed rounds (default: run until stopped)' },
  'eval-every': { type: 'int', default: 1, valueName: 'N', description: 'val loss every N committed rounds (0: never)' },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const WORKER_USAGE = formatUsage(
  'covenant worker --join HOST:PORT --run-id ID --data DIR --state DIR [--listen HOST:PORT --advertise HOST:PORT] [--metrics HOST:PORT]',
  WORKER_SPEC,
);

export async function runWorker(argv: string[], io: CliIO = defaultIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(WORKER_USAGE);
    return 0;
  }
  const args = parseArgs(argv, WORKER_SPEC);
  let metrics;
  try {
    metrics = args.metrics === undefined ? undefined : parseListenAddress('--metrics', args.metrics);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (args.threads !== undefined && args.threads < 1) throw new UsageError(`--threads must be at least 1, not ${args.threads}`);
  if (args.rounds !== undefined && args.rounds < 1) throw new UsageError(`--rounds must be at least 1, not ${args.rounds}`);
  if (args['eval-every'] < 0) throw new UsageError(`--eval-every must be 0 or more, not ${args['eval-every']}`);

  const logger = createLogger();
  const worker = new Worker({
    coordinator: args.join,
    runId: args['run-id'],
    dataDir: args.data,
    stateDir: args.state,
    listen: args.listen,
    advertise: args.advertise,
    threads: args.threads,
    device: args.device as 'cpu' | 'cuda',
    serveData: args['serve-data'],
    metrics,
    logger,
    maxRounds: args.rounds,
    evalEvery: args['eval-every'],
  });
  let signalled = '';
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) return;
    signalled = sig;
    logger.info('worker.signal', { signal: sig, graceSeconds: GRACEFUL_STOP_SECONDS });
    const force = setTimeout(() => {
      logger.error('worker.stop-timeout', { graceSeconds: GRACEFUL_STOP_SECONDS });
      process.exit(1);
    }, (GRACEFUL_STOP_SECONDS - 1) * 1000);
    force.unref();
    void worker.stop(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await worker.start();
    await worker.run();
    await worker.stop(signalled || 'done');
    return 0;
  } catch (e) {
    await worker.stop('error').catch(() => undefined);
    if (e instanceof WorkerConfigError) {
      io.err(`covenant: ${e.message}`);
      return 2;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

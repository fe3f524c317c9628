// `covenant coordinator`: serves a run (membership, round plans, the global state) from a validated run
// config and a state directory; a restart with the same directory resumes from the committed state.
// SIGTERM or SIGINT stops it cleanly (exit 0) within GRACEFUL_STOP_SECONDS.
import path from 'node:path';
import { formatUsage, parseArgs, UsageError } from './args';
import { CliIO, defaultIO } from './io';
import { GRACEFUL_STOP_SECONDS } from '../lifecycle';
import { createLogger } from '../log';
import { parseListenAddress } from '../metrics/http';
import { Coordinator } from '../swarm/coordinator';
import { parseRunConfig } from '../swarm/run-config';
import { readConfigFile } from '../train/train-config';

export const COORDINATOR_SPEC = {
  config: { type: 'string', required: true, valueName: 'FILE', description: 'run config (JSON): run id, model, data manifest hash, seed, hyper-parameters' },
  state: { type: 'string', required: true, valueName: 'DIR', description: 'state directory (global state, round log); a restart resumes from it' },
  listen: { type: 'string', default: '0.0.0.0:7470', valueName: 'HOST:PORT', description: 'gRPC listen address (port 0: a free port)' },
  metrics: { type: 'string', valueName: 'HOST:PORT', description: 'serve /metrics, /healthz and /readyz here (default: off)' },
  data: { type: 'string', valueName: 'DIR', description: "the run's prepared data: turns on the validator's useful-work check" },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const COORDINATOR_USAGE = formatUsage('covenant coordinator --config run.json --state DIR [--listen HOST:PORT] [--metrics HOST:PORT] [--data DIR]', COORDINATOR_SPEC);

export async function runCoordinator(argv: string[], io: CliIO = defaultIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(COORDINATOR_USAGE);
    return 0;
  }
  const args = parseArgs(argv, COORDINATOR_SPEC);
  let listen: string;
  let metrics;
  try {
    const l = parseListenAddress('--listen', args.listen);
    listen = l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
    metrics = args.metrics === undefined ? undefined : parseListenAddress('--metrics', args.metrics);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const raw = readConfigFile(args.config);
  let config;
  try {
    config = parseRunConfig(raw, path.basename(args.config));
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) throw new UsageError(`invalid run config ${args.config}: ${e.message}`);
    throw e;
  }

  const logger = createLogger();
  const coordinator = new Coordinator({ config, stateDir: args.state, listen, metrics, logger, dataDir: args.data });
  let signalled: (sig: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => {
    signalled = resolve;
  });
  const onSignal = (sig: NodeJS.Signals) => signalled(sig);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await coordinator.start();
    const sig = await stopped;
    logger.info('coordinator.signal', { signal: sig, graceSeconds: GRACEFUL_STOP_SECONDS });
    // A hard bound: whatever hangs, the process is gone before systemd's TimeoutStopSec.
    const force = setTimeout(() => {
      logger.error('coordinator.stop-timeout', { graceSeconds: GRACEFUL_STOP_SECONDS });
      process.exit(1);
    }, (GRACEFUL_STOP_SECONDS - 1) * 1000);
    force.unref();
    await coordinator.stop(Math.min(5000, (GRACEFUL_STOP_SECONDS - 5) * 1000));
    clearTimeout(force);
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await coordinator.stop(1000);
  }
}

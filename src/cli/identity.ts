// `covenant identity --state DIR`: prints the peer id of the worker whose state directory this is, creating
// its key when there is none yet, so that an operator can name the member in a run config (`validators`)
// before it first joins.
import { formatUsage, parseArgs } from './args';
import { CliIO, defaultIO } from './io';
import { loadOrCreateIdentity } from '../swarm/identity';

export const IDENTITY_SPEC = {
  state: { type: 'string', required: true, valueName: 'DIR', description: "the worker's state directory (its identity.key)" },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const IDENTITY_USAGE = formatUsage('covenant identity --state DIR', IDENTITY_SPEC);

export async function runIdentity(argv: string[], io: CliIO = defaultIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(IDENTITY_USAGE);
    return 0;
  }
  const args = parseArgs(argv, IDENTITY_SPEC);
  io.out(loadOrCreateIdentity(args.state).peerId);
  return 0;
}

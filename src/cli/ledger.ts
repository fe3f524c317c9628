// `covenant ledger verify|balances|show FILE` and `covenant ledger fetch`: audit a run's credit ledger. verify
// exits 1 naming the first bad entry's index; fetch streams it from a coordinator (any signed caller).
import * as fs from 'fs';
import { formatUsage, parseArgs, UsageError } from './args';
import { CliIO, defaultIO } from './io';
import { CommitBody, LedgerEntry } from '../ledger/entry';
import { readLedgerFile } from '../ledger/ledger';
import { fetchLedger } from '../ledger/stream';
import { ledgerBalances, verifyLedger } from '../ledger/verify';
import { SignedClient } from '../swarm/grpc-client';
import { Identity } from '../swarm/identity';
import { coordinatorService } from '../swarm/proto';
import { writeFileAtomic } from '../train/atomic-write';

const FILE_SPEC = {
  key: { type: 'string', valueName: 'BASE64', description: "the coordinator's ed25519 public key to pin (default: the genesis entry's)" },
  from: { type: 'int', min: 0, default: 0, valueName: 'N', description: 'show: start at entry N' },
  json: { type: 'bool', description: 'print JSON instead of text' },
  help: { type: 'bool', description: 'print this help' },
} as const;

const FETCH_SPEC = {
  from: { type: 'string', required: true, valueName: 'HOST:PORT', description: "the coordinator's gRPC address" },
  'run-id': { type: 'string', required: true, valueName: 'ID', description: 'the run' },
  out: { type: 'string', required: true, valueName: 'FILE', description: 'where to write the ledger (JSON lines)' },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const LEDGER_USAGE = [
  formatUsage('covenant ledger verify|balances|show FILE [--key BASE64] [--json]', FILE_SPEC),
  formatUsage('covenant ledger fetch --from HOST:PORT --run-id ID --out FILE', FETCH_SPEC),
].join('\n');

async function load(file: string): Promise<LedgerEntry[]> {
  if (!fs.existsSync(file)) throw new UsageError(`no ledger file ${file}`);
  const { entries, tornAt } = await readLedgerFile(file);
  if (tornAt !== undefined) throw new UsageError(`ledger ${file} ends in a partial line at byte ${tornAt} (a torn append); the coordinator cuts it on its next start`);
  return entries;
}

function describe(e: LedgerEntry): string {
  const when = new Date(e.timeMs).toISOString();
  const b = e.body as Record<string, unknown>;
  switch (e.type) {
    case 'genesis':
      return `#${e.index} ${when} genesis  run ${b.runId}, coordinator ${b.coordinatorPeerId}, from round ${b.round} θ ${String(b.thetaSha256).slice(0, 12)}`;
    case 'commit': {
      const c = e.body as unknown as CommitBody;
      const members = c.members.map((m) => `${m.peerId.slice(0, 8)} ${m.verdict}${m.reason ? ` (${m.reason})` : ''} ${m.credits}`).join(', ');
      return `#${e.index} ${when} commit   round ${c.round} attempt ${c.attempt} θ ${c.thetaSha256.slice(0, 12)}: ${members}`;
    }
    default:
      return `#${e.index} ${when} ${e.type.padEnd(8)} ${b.peerId}${b.reason ? ` (${b.reason})` : ''}`;
  }
}

export async function runLedger(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(LEDGER_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'fetch') {
    const a = parseArgs(rest, FETCH_SPEC);
    if (a.help) return io.out(LEDGER_USAGE), 0;
    const client = new SignedClient(coordinatorService(), { address: a.from, identity: Identity.generate(), runId: a['run-id'] });
    try {
      const entries = await fetchLedger(client, 0);
      const report = verifyLedger(entries);
      await writeFileAtomic(a.out, Buffer.from(entries.map((e) => `${JSON.stringify(e)}\n`).join('')));
      io.out(`fetched ${entries.length} entries into ${a.out}; ${report.ok ? 'verified' : `does NOT verify: ${report.errors.length} problem(s)`}`);
      return report.ok ? 0 : 1;
    } finally {
      client.close();
    }
  }
  if (!['verify', 'balances', 'show'].includes(sub)) throw new UsageError(`unknown ledger command ${JSON.stringify(sub)} (verify, balances, show, fetch)`);
  const a = parseArgs(rest, FILE_SPEC, { positionals: true });
  if (a.help) return io.out(LEDGER_USAGE), 0;
  if (a._.length !== 1) throw new UsageError(`covenant ledger ${sub} takes one FILE`);
  const entries = await load(a._[0]);
  const key = a.key === undefined ? undefined : Buffer.from(a.key, 'base64');
  if (key && key.length !== 32) throw new UsageError('--key must be a base64 32-byte ed25519 public key');
  if (sub === 'verify') {
    const r = verifyLedger(entries, key);
    if (a.json) io.out(JSON.stringify(r));
    else if (r.ok) io.out(`ledger ${a._[0]}: ${r.entries} entries, ${r.rounds} committed round(s); chain, signatures and θ hashes verify`);
    else for (const e of r.errors) io.err(`ledger ${a._[0]}: entry ${e.index}: ${e.what}`);
    return r.ok ? 0 : 1;
  }
  if (sub === 'balances') {
    const b = ledgerBalances(entries);
    if (a.json) io.out(JSON.stringify(b));
    else {
      io.out('peer                                       credits      tokens  rounds  failed');
      for (const x of b) io.out(`${x.peerId.padEnd(42)} ${String(x.credits).padStart(8)} ${String(x.tokens).padStart(11)} ${String(x.rounds).padStart(7)} ${String(x.failed).padStart(7)}`);
    }
    return 0;
  }
  for (const e of entries.slice(a.from)) io.out(a.json ? JSON.stringify(e) : describe(e));
  return 0;
}

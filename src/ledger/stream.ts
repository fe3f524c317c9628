// StreamLedger, both sides: the coordinator streams its entries from an index; a client (a worker keeping
// its own entries, an auditor) reads them and checks each one's hash and the coordinator's signature.
import * as grpc from '@grpc/grpc-js';
import type { SignedClient } from '../swarm/grpc-client';
import type { CoordinatorMethods, LedgerEntryMessage } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { entryProblem, LedgerEntry } from './entry';
import type { Ledger } from './ledger';

export async function* streamLedger(ledger: Ledger, fromIndex: number): AsyncGenerator<LedgerEntryMessage> {
  if (!Number.isSafeInteger(fromIndex) || fromIndex < 0) throw new RpcError(grpc.status.INVALID_ARGUMENT, `from_index ${fromIndex} is not a non-negative integer`, 'bad-index');
  for (const e of ledger.entries(fromIndex)) yield { index: e.index, json: JSON.stringify(e) };
}

/** Entries from `fromIndex`, each checked against `coordinatorKey` (raw ed25519; default: the genesis entry's, when fromIndex is 0). */
export async function fetchLedger(client: SignedClient<CoordinatorMethods>, fromIndex = 0, coordinatorKey?: Buffer): Promise<LedgerEntry[]> {
  const out: LedgerEntry[] = [];
  let key = coordinatorKey;
  for await (const m of client.stream('streamLedger', { fromIndex })) {
    let e: LedgerEntry;
    try {
      e = JSON.parse(m.json) as LedgerEntry;
    } catch {
      throw new RpcError(grpc.status.DATA_LOSS, `ledger entry ${m.index} is not JSON`, 'ledger-corrupt');
    }
    if (e.index !== fromIndex + out.length) throw new RpcError(grpc.status.DATA_LOSS, `ledger entry ${e.index} arrived where ${fromIndex + out.length} was expected`, 'ledger-corrupt');
    if (!key && e.type === 'genesis' && e.index === 0) key = Buffer.from(String(e.body.coordinatorPublicKey), 'base64');
    if (!key) throw new RpcError(grpc.status.FAILED_PRECONDITION, 'no coordinator key to check the ledger entries with (fetch from index 0, or give the key)', 'no-ledger-key');
    const problem = entryProblem(e, key);
    if (problem) throw new RpcError(grpc.status.DATA_LOSS, `ledger entry ${e.index}: ${problem}`, 'ledger-corrupt');
    out.push(e);
  }
  return out;
}

// A member's own copy of the ledger entries that concern it (genesis, its join/leave/drop, the commits it
// is in), kept in STATE/ledger.jsonl. Each entry carries the coordinator's signature, so the copy proves the
// member's credits to anyone who knows the coordinator's key, without the rest of the ledger.
import * as fs from 'fs';
import * as path from 'path';
import type { SignedClient } from '../swarm/grpc-client';
import type { CoordinatorMethods } from '../swarm/proto';
import { entryProblem, LedgerEntry } from './entry';
import { LEDGER_FILE, readLedgerFile } from './ledger';
import { fetchLedger } from './stream';
import { entriesOf } from './verify';

export class MemberLedger {
  readonly file: string;
  readonly peerId: string;
  #kept: LedgerEntry[] = [];
  #next = 0;
  #key: Buffer | undefined;
  #syncing: Promise<number> = Promise.resolve(0);

  private constructor(file: string, peerId: string) {
    this.file = file;
    this.peerId = peerId;
  }

  /** Loads the copy in `stateDir` (entries whose coordinator signature fails are dropped from memory and refetched). */
  static async open(stateDir: string, peerId: string): Promise<MemberLedger> {
    const m = new MemberLedger(path.join(stateDir, LEDGER_FILE), peerId);
    const { entries } = await readLedgerFile(m.file);
    const genesis = entries[0];
    if (genesis?.type === 'genesis') {
      m.#key = Buffer.from(String(genesis.body.coordinatorPublicKey), 'base64');
      m.#kept = entries.filter((e) => m.#key && entryProblem(e, m.#key) === undefined);
      m.#next = m.#kept.length ? m.#kept[m.#kept.length - 1].index + 1 : 0;
    }
    return m;
  }

  get entries(): readonly LedgerEntry[] {
    return this.#kept;
  }

  /** Fetches the entries after the last one held and appends those concerning this member; resolves with how many. */
  sync(client: SignedClient<CoordinatorMethods>): Promise<number> {
    const run = async () => {
      const fresh = await fetchLedger(client, this.#next, this.#key);
      if (fresh.length === 0) return 0;
      if (!this.#key && fresh[0].type === 'genesis') this.#key = Buffer.from(String(fresh[0].body.coordinatorPublicKey), 'base64');
      const mine = entriesOf(fresh, this.peerId);
      if (mine.length > 0) {
        const handle = await fs.promises.open(this.file, 'a', 0o600);
        try {
          await handle.write(mine.map((e) => `${JSON.stringify(e)}\n`).join(''));
          await handle.sync();
        } finally {
          await handle.close();
        }
        this.#kept.push(...mine);
      }
      this.#next = fresh[fresh.length - 1].index + 1;
      return mine.length;
    };
    const result = this.#syncing.then(run, run);
    this.#syncing = result.catch(() => 0);
    return result;
  }
}

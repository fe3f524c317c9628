// The coordinator's ledger file, `STATE/ledger.jsonl`: one LedgerEntry per line, appended and fsynced,
// never rewritten. Opening it checks the whole chain (verify.ts); a torn last line (a crash during an
// append) is cut off, anything else that fails the check stops the coordinator.
import * as fs from 'fs';
import * as path from 'path';
import { CovenantError, hasCode } from '../errors';
import { Identity } from '../swarm/identity';
import { EntryType, GenesisBody, LedgerEntry, makeEntry } from './entry';
import { verifyLedger } from './verify';

export const LEDGER_FILE = 'ledger.jsonl';

export class LedgerCorruptError extends CovenantError {
  constructor(message: string) {
    super('LEDGER_CORRUPT', message);
  }
}

/** Parses ledger text: the entries of its complete lines and, if the last line has no newline, its offset. */
export function parseLedger(text: string, source: string): { entries: LedgerEntry[]; tornAt?: number } {
  const entries: LedgerEntry[] = [];
  let offset = 0;
  while (offset < text.length) {
    const nl = text.indexOf('\n', offset);
    if (nl < 0) return { entries, tornAt: Buffer.byteLength(text.slice(0, offset)) };
    const line = text.slice(offset, nl);
    try {
      entries.push(JSON.parse(line) as LedgerEntry);
    } catch (e) {
      throw new LedgerCorruptError(`ledger ${source}: entry ${entries.length} (line ${entries.length + 1}) is not JSON: ${(e as Error).message}`);
    }
    offset = nl + 1;
  }
  return { entries };
}

export async function readLedgerFile(file: string): Promise<{ entries: LedgerEntry[]; tornAt?: number }> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (e) {
    if (hasCode(e, 'ENOENT')) return { entries: [] };
    throw e;
  }
  return parseLedger(text, file);
}

export class Ledger {
  readonly file: string;
  readonly #key: Identity;
  readonly #entries: LedgerEntry[];
  #handle: fs.promises.FileHandle | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: string, key: Identity, entries: LedgerEntry[], handle: fs.promises.FileHandle) {
    this.file = file;
    this.#key = key;
    this.#entries = entries;
    this.#handle = handle;
  }

  /**
   * Opens (creating with a genesis entry) `stateDir/ledger.jsonl`, signed with `key`. An existing ledger must
   * verify and must have been signed by `key` and be for `genesis.runId`.
   */
  static async open(stateDir: string, key: Identity, genesis: GenesisBody): Promise<{ ledger: Ledger; tornBytes?: number }> {
    await fs.promises.mkdir(stateDir, { recursive: true });
    const file = path.join(stateDir, LEDGER_FILE);
    const { entries, tornAt } = await readLedgerFile(file);
    if (entries.length > 0) {
      const report = verifyLedger(entries);
      if (!report.ok) throw new LedgerCorruptError(`ledger ${file} does not verify: ${report.errors.map((e) => `entry ${e.index}: ${e.what}`).join('; ')}`);
      const g = entries[0].body as unknown as GenesisBody;
      if (g.coordinatorPublicKey !== key.publicKey.toString('base64')) {
        throw new LedgerCorruptError(`ledger ${file} was signed by coordinator ${g.coordinatorPeerId}, not by this coordinator's key ${key.peerId} (${path.join(stateDir, 'identity.key')})`);
      }
      if (g.runId !== genesis.runId) throw new LedgerCorruptError(`ledger ${file} belongs to run ${JSON.stringify(g.runId)}, not ${JSON.stringify(genesis.runId)}`);
    }
    const handle = await fs.promises.open(file, 'a');
    let torn: number | undefined;
    if (tornAt !== undefined) {
      torn = (await handle.stat()).size - tornAt;
      await handle.truncate(tornAt);
      await handle.sync();
    }
    const ledger = new Ledger(file, key, entries, handle);
    if (entries.length === 0) await ledger.append('genesis', genesis as unknown as Record<string, unknown>);
    return { ledger, tornBytes: torn };
  }

  get length(): number {
    return this.#entries.length;
  }

  /** Entries from `index` on (copies of the array, the entries themselves are frozen by convention). */
  entries(from = 0): LedgerEntry[] {
    return this.#entries.slice(Math.max(0, from));
  }

  /** Signs and appends an entry; resolves once it is on disk. Appends are serialized. */
  append(type: EntryType, body: Record<string, unknown>): Promise<LedgerEntry> {
    const run = async () => {
      const handle = this.#handle;
      if (!handle) throw new Error(`ledger ${this.file} is closed`);
      const entry = makeEntry(this.#key, this.#entries[this.#entries.length - 1], type, body);
      const bytes = Buffer.from(`${JSON.stringify(entry)}\n`, 'utf8');
      let done = 0;
      while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
      await handle.sync();
      this.#entries.push(entry);
      return entry;
    };
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    await this.#queue.catch(() => undefined);
    const h = this.#handle;
    this.#handle = undefined;
    await h?.close();
  }
}

// The coordinator's round log: `rounds.jsonl` in its state directory, one JSON object per committed round
// (members, ring, tokens, mean loss, θ hash, timings), appended and fsynced before the commit is announced.
// Reading it back skips nothing silently: a torn last line (a crash during an append, no newline) is
// reported and ignored — and cut off before the next append — while a bad line anywhere else is an error.
import * as fs from 'fs';
import * as path from 'path';
import { CovenantError, hasCode } from '../errors';
import { invalidParameter } from '../train/model-config';

export const ROUND_LOG_FILE = 'rounds.jsonl';

/** Mean per-member timings of a round, seconds. */
export interface RoundLogTimings {
  innerSeconds: number;
  allreduceSeconds: number;
  outerSeconds: number;
  totalSeconds: number;
}

/** One committed round. */
export interface RoundLogEntry {
  /** The round that was committed: thetaSha256 is θ(round + 1). */
  round: number;
  /** The plan attempt that committed (0: the first plan). */
  attempt: number;
  /** Peer ids of the attempt's members that reported the committed hash. */
  members: string[];
  /** Peer ids in ring order. */
  ring: string[];
  /** Tokens trained on in the round, all members together. */
  tokens: number;
  /** Mean inner loss over the members; null when none was reported (NaN has no JSON form). */
  meanLoss: number | null;
  thetaSha256: string;
  /** Wall clock (ms since the epoch) when the round was planned and when it was committed. */
  plannedAtMs: number;
  committedAtMs: number;
  timings: RoundLogTimings;
}

export class RoundLogCorruptError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ROUND_LOG_CORRUPT', message, options);
  }
}

/** A last line without its newline: an append the crash cut short. It is not part of the log. */
export interface TornLine {
  /** 1-based line number. */
  line: number;
  /** Byte offset where it starts (the log is cut back to this length before the next append). */
  offset: number;
  bytes: number;
}

export interface RoundLogContents {
  entries: RoundLogEntry[];
  torn?: TornLine;
}

const HEX64 = /^[0-9a-f]{64}$/;
const TIMING_KEYS = ['innerSeconds', 'allreduceSeconds', 'outerSeconds', 'totalSeconds'] as const;

/** Why `x` is not a RoundLogEntry, or undefined when it is one. */
function entryProblem(x: unknown): string | undefined {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return 'not a JSON object';
  const e = x as Record<string, unknown>;
  const count = (k: string) => (Number.isSafeInteger(e[k]) && (e[k] as number) >= 0 ? undefined : `${k} is not a non-negative integer`);
  const ids = (k: string) =>
    Array.isArray(e[k]) && (e[k] as unknown[]).every((p) => typeof p === 'string' && p.length > 0) ? undefined : `${k} is not an array of peer ids`;
  const problem =
    count('round') ?? count('attempt') ?? ids('members') ?? ids('ring') ?? count('tokens') ?? count('plannedAtMs') ?? count('committedAtMs');
  if (problem) return problem;
  if (!(e.meanLoss === null || (typeof e.meanLoss === 'number' && Number.isFinite(e.meanLoss)))) return 'meanLoss is neither a finite number nor null';
  if (typeof e.thetaSha256 !== 'string' || !HEX64.test(e.thetaSha256)) return 'thetaSha256 is not a lowercase hex SHA-256';
  const t = e.timings;
  if (typeof t !== 'object' || t === null) return 'timings is not an object';
  for (const k of TIMING_KEYS) {
    const v = (t as Record<string, unknown>)[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return `timings.${k} is not a non-negative number`;
  }
  return undefined;
}

/** Only the known fields, in a fixed order (what append writes). */
function normalize(e: RoundLogEntry): RoundLogEntry {
  return {
    round: e.round,
    attempt: e.attempt,
    members: [...e.members],
    ring: [...e.ring],
    tokens: e.tokens,
    meanLoss: e.meanLoss,
    thetaSha256: e.thetaSha256,
    plannedAtMs: e.plannedAtMs,
    committedAtMs: e.committedAtMs,
    timings: {
      innerSeconds: e.timings.innerSeconds,
      allreduceSeconds: e.timings.allreduceSeconds,
      outerSeconds: e.timings.outerSeconds,
      totalSeconds: e.timings.totalSeconds,
    },
  };
}

/** Parses the log's bytes; `source` names it in errors. */
export function parseRoundLog(text: Buffer, source: string): RoundLogContents {
  const entries: RoundLogEntry[] = [];
  let offset = 0;
  let line = 0;
  while (offset < text.byteLength) {
    line += 1;
    const nl = text.indexOf(0x0a, offset);
    if (nl < 0) return { entries, torn: { line, offset, bytes: text.byteLength - offset } };
    const raw = text.subarray(offset, nl).toString('utf8');
    const fail = (what: string) => new RoundLogCorruptError(`Round log ${source}, line ${line} (byte ${offset}): ${what}; the log is damaged, refusing to continue from it`);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw fail(`not valid JSON (${(e as Error).message})`);
    }
    const problem = entryProblem(value);
    if (problem) throw fail(problem);
    const entry = value as RoundLogEntry;
    const prev = entries[entries.length - 1];
    if (prev && entry.round <= prev.round) throw fail(`round ${entry.round} does not follow round ${prev.round}`);
    entries.push(normalize(entry));
    offset = nl + 1;
  }
  return { entries };
}

/** Reads the log at `file`; a missing file is an empty log. */
export async function readRoundLog(file: string): Promise<RoundLogContents> {
  let text: Buffer;
  try {
    text = await fs.promises.readFile(file);
  } catch (e) {
    if (hasCode(e, 'ENOENT')) return { entries: [] };
    throw e;
  }
  return parseRoundLog(text, file);
}

/** The append side. Open with RoundLog.open; appends are serialized, each one written and fsynced. */
export class RoundLog {
  readonly file: string;
  #handle: fs.promises.FileHandle | undefined;
  #lastRound: number | undefined;
  #queue: Promise<void> = Promise.resolve();
  /** Set when a write or fsync failed: the file may end in a partial line, so nothing more is appended. */
  #broken: unknown;

  private constructor(file: string, handle: fs.promises.FileHandle, lastRound: number | undefined) {
    this.file = file;
    this.#handle = handle;
    this.#lastRound = lastRound;
  }

  /**
   * Opens (creating) `stateDir/rounds.jsonl`, reads what it holds and cuts off a torn last line, which is
   * returned in `torn` for the caller to report. A bad line before the last throws RoundLogCorruptError.
   */
  static async open(stateDir: string): Promise<{ log: RoundLog } & RoundLogContents> {
    await fs.promises.mkdir(stateDir, { recursive: true });
    const file = path.join(stateDir, ROUND_LOG_FILE);
    const contents = await readRoundLog(file);
    const handle = await fs.promises.open(file, 'a');
    try {
      if (contents.torn) {
        await handle.truncate(contents.torn.offset);
        await handle.sync();
      }
    } catch (e) {
      await handle.close();
      throw e;
    }
    const last = contents.entries[contents.entries.length - 1];
    return { log: new RoundLog(file, handle, last?.round), ...contents };
  }

  /** Round of the last entry, if any. */
  get lastRound(): number | undefined {
    return this.#lastRound;
  }

  /** Appends one committed round; resolves once the line is on disk (fsync). Rounds must increase. */
  append(entry: RoundLogEntry): Promise<void> {
    const problem = entryProblem(entry);
    if (problem) return Promise.reject(new TypeError(invalidParameter('entry', `a round log entry (${problem})`, JSON.stringify(entry))));
    const run = async () => {
      const handle = this.#handle;
      if (!handle) throw new Error(`round log ${this.file} is closed`);
      if (this.#broken !== undefined) {
        throw new Error(`round log ${this.file}: an earlier append failed; reopen the log (it cuts a torn line) before appending`, { cause: this.#broken });
      }
      if (this.#lastRound !== undefined && entry.round <= this.#lastRound) {
        throw new RangeError(`round log ${this.file}: round ${entry.round} does not follow the last logged round ${this.#lastRound}`);
      }
      const bytes = Buffer.from(`${JSON.stringify(normalize(entry))}\n`, 'utf8');
      try {
        let done = 0;
        while (done < bytes.byteLength) done += (await handle.write(bytes, done, bytes.byteLength - done)).bytesWritten;
        await handle.sync();
      } catch (e) {
        this.#broken = e;
        throw e;
      }
      this.#lastRound = entry.round;
    };
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Waits for pending appends and closes the file. */
  async close(): Promise<void> {
    await this.#queue;
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close();
  }
}

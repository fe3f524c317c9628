// Auditing a ledger: the chain (indexes, prevHash links, content hashes), the coordinator's signature on
// every entry (its key from the genesis entry, or one given), the members' signatures on the reports kept
// in commit entries (and validator members' on the checks they ran), and that the θ hashes follow round after
// round. Balances: credits per peer.
import { SUBMIT_CHECK_METHOD } from '../trust/check-delegation';
import { CheckLosses, usefulWorkFromLosses } from '../trust/useful-work';
import { CommitBody, GENESIS_PREV_HASH, GenesisBody, LedgerEntry, MemberOutcome, entryProblem, openSignedRecord } from './entry';

export interface LedgerProblem {
  index: number;
  what: string;
}

export interface LedgerReport {
  ok: boolean;
  entries: number;
  rounds: number;
  errors: LedgerProblem[];
}

/** Checks every entry; `coordinatorKey` (raw ed25519) overrides the genesis entry's key (pin it when known). */
export function verifyLedger(entries: readonly LedgerEntry[], coordinatorKey?: Buffer): LedgerReport {
  const errors: LedgerProblem[] = [];
  const fail = (index: number, what: string) => errors.push({ index, what });
  if (entries.length === 0) return { ok: false, entries: 0, rounds: 0, errors: [{ index: 0, what: 'the ledger is empty (no genesis entry)' }] };
  const genesis = entries[0];
  if (genesis.type !== 'genesis') fail(0, `the first entry is ${genesis.type}, not genesis`);
  const g = (genesis.body ?? {}) as Partial<GenesisBody>;
  const key = coordinatorKey ?? Buffer.from(typeof g.coordinatorPublicKey === 'string' ? g.coordinatorPublicKey : '', 'base64');
  if (key.length !== 32) return { ok: false, entries: entries.length, rounds: 0, errors: [...errors, { index: 0, what: 'no 32-byte coordinator public key in the genesis entry' }] };
  if (coordinatorKey && g.coordinatorPublicKey !== coordinatorKey.toString('base64')) fail(0, 'the genesis entry names another coordinator key than the one given');

  let theta = typeof g.thetaSha256 === 'string' ? g.thetaSha256 : '';
  let lastRound = typeof g.round === 'number' ? g.round : 0;
  let rounds = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.index !== i) fail(i, `index ${e.index} where ${i} was expected (an entry was removed or inserted)`);
    const prev = i === 0 ? GENESIS_PREV_HASH : entries[i - 1].hash;
    if (e.prevHash !== prev) fail(i, `prevHash ${e.prevHash} does not link to the entry before (${prev})`);
    const p = entryProblem(e, key);
    if (p) fail(i, p);
    if (i > 0 && e.type === 'genesis') fail(i, 'a second genesis entry');
    if (e.type !== 'commit') continue;
    const c = e.body as unknown as CommitBody;
    rounds++;
    if (c.prevThetaSha256 !== theta) fail(i, `round ${c.round} starts from θ ${c.prevThetaSha256}, but the previous commit left ${theta}`);
    if (!(c.round > lastRound)) fail(i, `round ${c.round} does not follow round ${lastRound}`);
    theta = c.thetaSha256;
    lastRound = c.round;
    for (const m of Array.isArray(c.members) ? c.members : []) {
      if (m.verdict === 'verified' && !m.report) fail(i, `member ${m.peerId} is credited without its signed report`);
      if (m.credits !== 0 && m.verdict !== 'verified') fail(i, `member ${m.peerId} earns ${m.credits} credits with verdict ${m.verdict}`);
      if (m.report) {
        const opened = openSignedRecord(m.report, m.peerId);
        if (typeof opened === 'string') {
          fail(i, `member ${m.peerId}: ${opened}`);
        } else {
          const body = opened.body as { id?: { round?: number }; thetaSha256?: string; tokens?: number };
          if (body.id?.round !== c.round) fail(i, `member ${m.peerId}'s signed report is for round ${body.id?.round}, not ${c.round}`);
          if (m.verdict === 'verified' && body.thetaSha256 !== c.thetaSha256) fail(i, `member ${m.peerId}'s signed report has θ ${body.thetaSha256}, not the committed ${c.thetaSha256}`);
          if (body.tokens !== m.tokens) fail(i, `member ${m.peerId} is recorded with ${m.tokens} tokens but signed ${body.tokens}`);
        }
      }
      const w = m.usefulWork;
      if (w?.check || w?.checkedBy) {
        const problem = delegatedCheckProblem(w, m.peerId, c.round);
        if (problem) fail(i, `member ${m.peerId}'s useful-work check: ${problem}`);
      }
    }
  }
  return { ok: errors.length === 0, entries: entries.length, rounds, errors };
}

/** What is wrong with a check a validator member ran (its signed losses against the recorded gains), or undefined. */
function delegatedCheckProblem(w: NonNullable<MemberOutcome['usefulWork']>, peerId: string, round: number): string | undefined {
  if (!w.check || !w.checkedBy) return 'a validator is named without its signed check, or the reverse';
  if (w.checkedBy === peerId) return 'the member checked itself';
  if (w.check.method !== SUBMIT_CHECK_METHOD) return `the signed check is a ${w.check.method} request`;
  const opened = openSignedRecord(w.check, w.checkedBy);
  if (typeof opened === 'string') return `validator ${w.checkedBy}: ${opened.replace('report', 'check')}`;
  const b = opened.body as { round?: number; peerId?: string; assignedBefore?: number[]; assignedAfter?: number[]; controlBefore?: number[]; controlAfter?: number[] };
  if (b.round !== round || b.peerId !== peerId) return `the signed check is for round ${b.round}, member ${b.peerId}`;
  const sides = [b.assignedBefore, b.assignedAfter, b.controlBefore, b.controlAfter];
  if (!sides.every((x) => Array.isArray(x) && x.length === sides[0]!.length && x.length > 0)) return 'the signed check does not hold four equal, non-empty loss lists';
  const r = usefulWorkFromLosses(b as CheckLosses);
  if (r.gainAssigned !== w.gainAssigned || r.gainControl !== w.gainControl) return `the recorded gains (${w.gainAssigned}, ${w.gainControl}) are not the signed losses' (${r.gainAssigned}, ${r.gainControl})`;
  return undefined;
}

export interface Balance {
  peerId: string;
  credits: number;
  rounds: number;
  failed: number;
  tokens: number;
}

/** Credits per peer over the commit entries, highest first. */
export function ledgerBalances(entries: readonly LedgerEntry[]): Balance[] {
  const by = new Map<string, Balance>();
  for (const e of entries) {
    if (e.type !== 'commit') continue;
    for (const m of (e.body as unknown as CommitBody).members ?? []) {
      const b = by.get(m.peerId) ?? { peerId: m.peerId, credits: 0, rounds: 0, failed: 0, tokens: 0 };
      b.credits += m.credits;
      if (m.verdict === 'verified') {
        b.rounds++;
        b.tokens += m.tokens;
      } else if (m.verdict === 'failed') b.failed++;
      by.set(m.peerId, b);
    }
  }
  return [...by.values()].sort((a, b) => b.credits - a.credits || (a.peerId < b.peerId ? -1 : 1));
}

/** The entries that concern `peerId`: genesis, its own join/leave/drop, and every commit it is a member of. */
export function entriesOf(entries: readonly LedgerEntry[], peerId: string): LedgerEntry[] {
  return entries.filter(
    (e) =>
      e.type === 'genesis' ||
      (e.type === 'commit'
        ? ((e.body as unknown as CommitBody).members ?? []).some((m) => m.peerId === peerId)
        : e.type === 'abandon'
          ? ((e.body.failed as Array<{ peerId: string }>) ?? []).some((f) => f.peerId === peerId)
          : e.body.peerId === peerId),
  );
}

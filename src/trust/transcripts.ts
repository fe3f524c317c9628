// Ring transcripts: every member reports, in its signed round report, the SHA-256 of all data frames it sent
// its successor and of all it received from its predecessor. On an honest hop the two are equal; a hop
// whose ends disagree names the two members, one of whom lied about its traffic. (The ring order changes
// every round, so the liar is the member that keeps showing up in such hops.)
import type { ReportRoundRequest } from '../swarm/proto';

export interface HopCheck {
  from: string;
  to: string;
  ok: boolean;
}

/** The hops of `ring` (peer ids in rank order) whose ends both reported, and whether their hashes agree. */
export function auditTranscripts(ring: readonly string[], reports: ReadonlyMap<string, ReportRoundRequest>): HopCheck[] {
  if (ring.length < 2) return [];
  const out: HopCheck[] = [];
  for (let r = 0; r < ring.length; r++) {
    const from = ring[r];
    const to = ring[(r + 1) % ring.length];
    const a = reports.get(from);
    const b = reports.get(to);
    if (!a || !b || a.outcome !== 'ROUND_OUTCOME_COMPLETED' || b.outcome !== 'ROUND_OUTCOME_COMPLETED') continue;
    out.push({ from, to, ok: a.transcriptSentSha256 !== '' && a.transcriptSentSha256 === b.transcriptReceivedSha256 });
  }
  return out;
}

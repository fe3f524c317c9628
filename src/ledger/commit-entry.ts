// The ledger entry of a committed round: every member with its verdict, tokens, score and credits, its data
// assignment and its own signed report. Credits = verified tokens × quality score.
import { assignmentId } from '../diloco/assignment';
import type { PendingCommit } from '../swarm/commit-applier';
import type { ReportRoundRequest } from '../swarm/proto';
import type { RunConfig } from '../swarm/run-config';
import { CommitBody, MemberOutcome, signedRecord } from './entry';

export const REPORT_ROUND_METHOD = '/covenant.v1.Coordinator/ReportRound';

/** What the checks of a round concluded about one member (absent: nothing failed, score 1). */
export interface MemberCheck {
  ok: boolean;
  score: number;
  reason?: string;
}

export function commitBody(
  c: PendingCommit,
  reports: ReadonlyMap<string, ReportRoundRequest>,
  cfg: Pick<RunConfig, 'manifestSha256' | 'seed' | 'innerSteps' | 'batchSize' | 'seqLen'>,
  checks: ReadonlyMap<string, MemberCheck> = new Map(),
): CommitBody {
  const outcome = (peerId: string, agreed: boolean): MemberOutcome => {
    const report = reports.get(peerId);
    const check = checks.get(peerId);
    const tokens = report?.tokens ?? 0;
    const verdict = !agreed ? 'resync' : check && !check.ok ? 'failed' : 'verified';
    const score = verdict === 'verified' ? Math.max(0, Math.min(1, check?.score ?? 1)) : 0;
    return {
      peerId,
      verdict,
      ...(verdict === 'failed' ? { reason: check?.reason ?? 'check failed' } : verdict === 'resync' ? { reason: 'θ hash disagreed with the majority' } : {}),
      tokens,
      score,
      credits: verdict === 'verified' && report ? Math.round(tokens * score) : 0,
      assignmentDigest: assignmentId(cfg.manifestSha256, cfg.seed, c.round, peerId, cfg.innerSteps, cfg.batchSize, cfg.seqLen),
      ...(report ? { report: signedRecord(REPORT_ROUND_METHOD, report) } : {}),
    };
  };
  return {
    round: c.round,
    attempt: c.attempt,
    prevThetaSha256: c.prevThetaSha256,
    thetaSha256: c.thetaSha256,
    ring: [...c.ring],
    members: [...c.members.map((p) => outcome(p, true)), ...c.resync.map((p) => outcome(p, false))],
  };
}

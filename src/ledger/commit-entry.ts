// The ledger entry of a committed round: every member with its verdict, tokens, score and credits, its data
// assignment and its own signed report. Credits = verified tokens × quality score.
import { assignmentId } from '../diloco/assignment';
import type { PendingCommit } from '../swarm/commit-applier';
import type { ReportRoundRequest } from '../swarm/proto';
import type { RunConfig } from '../swarm/run-config';
import type { RoundLogEntry } from '../swarm/round-log';
import { CommitBody, LedgerEntry, MemberOutcome, SignedRecord, signedRecord } from './entry';

export const REPORT_ROUND_METHOD = '/covenant.v1.Coordinator/ReportRound';

/** What the checks of a round concluded about one member (absent: nothing failed, score 1). */
export interface MemberCheck {
  ok: boolean;
  score: number;
  reason?: string;
  /** A statistical failure (not a proof of cheating): excludes only when repeated. */
  soft?: boolean;
  /** The round could not be verified for this member (e.g. the ring's result failed the audit): no credit, no strike. */
  unverified?: boolean;
  /** Useful-work loss drops on the member's windows and on windows it was not given (when checked). */
  gainAssigned?: number;
  gainControl?: number;
  /** A validator member ran the useful-work check: its peer id and its signed SubmitCheck. */
  checkedBy?: string;
  check?: SignedRecord;
}

export function commitBody(
  c: PendingCommit,
  reports: ReadonlyMap<string, ReportRoundRequest>,
  cfg: Pick<RunConfig, 'manifestSha256' | 'seed' | 'innerSteps' | 'batchSize' | 'seqLen'> & { shardsPerRound?: number },
  checks: ReadonlyMap<string, MemberCheck> = new Map(),
  commitments?: ReadonlyMap<string, SignedRecord>,
  refused: ReadonlyMap<string, string> = new Map(),
): CommitBody {
  const outcome = (peerId: string, agreed: boolean): MemberOutcome => {
    const report = reports.get(peerId);
    const check = checks.get(peerId);
    const tokens = report?.tokens ?? 0;
    const verdict = !agreed ? 'resync' : check && !check.ok ? (check.unverified ? 'unverified' : 'failed') : 'verified';
    const score = verdict === 'verified' ? Math.max(0, Math.min(1, check?.score ?? 1)) : 0;
    return {
      peerId,
      verdict,
      ...(verdict === 'failed' || verdict === 'unverified' ? { reason: check?.reason ?? 'check failed' } : verdict === 'resync' ? { reason: 'θ hash disagreed with the majority' } : {}),
      tokens,
      score,
      credits: verdict === 'verified' && report ? Math.round(tokens * score) : 0,
      assignmentDigest: assignmentId(cfg.manifestSha256, cfg.seed, c.round, peerId, cfg.innerSteps, cfg.batchSize, cfg.seqLen, cfg.shardsPerRound ?? 0),
      ...(check?.gainAssigned !== undefined
        ? { usefulWork: { gainAssigned: check.gainAssigned, gainControl: check.gainControl ?? 0, ...(check.checkedBy && check.check ? { checkedBy: check.checkedBy, check: check.check } : {}) } }
        : {}),
      ...(report ? { report: signedRecord(REPORT_ROUND_METHOD, report) } : {}),
      ...(commitments?.get(peerId) ? { commitment: commitments.get(peerId) } : {}),
    };
  };
  return {
    round: c.round,
    attempt: c.attempt,
    prevThetaSha256: c.prevThetaSha256,
    thetaSha256: c.thetaSha256,
    ring: [...c.ring],
    members: [
      ...c.members.map((p) => outcome(p, true)),
      ...c.resync.map((p) => outcome(p, false)),
      ...[...refused].filter(([p]) => !c.members.includes(p)).map(([peerId, reason]): MemberOutcome => ({
        peerId,
        verdict: 'failed',
        reason,
        tokens: 0,
        score: 0,
        credits: 0,
        assignmentDigest: assignmentId(cfg.manifestSha256, cfg.seed, c.round, peerId, cfg.innerSteps, cfg.batchSize, cfg.seqLen, cfg.shardsPerRound ?? 0),
      })),
    ],
  };
}

/**
 * Commit entries for rounds the coordinator saved but stopped before writing to the ledger (it writes a
 * round's entry once the round's checks are in): from the round log where it has them, else the saved state
 * alone. Their members get verdict 'unverified' and no credits; the θ chain stays whole.
 */
export function missedCommits(
  ledger: readonly LedgerEntry[],
  roundLog: readonly RoundLogEntry[],
  state: { round: number; thetaHash: string },
  cfg: Pick<RunConfig, 'manifestSha256' | 'seed' | 'innerSteps' | 'batchSize' | 'seqLen'> & { shardsPerRound?: number },
): CommitBody[] {
  let round = 0;
  let theta = '';
  for (const e of ledger) {
    if (e.type === 'genesis') [round, theta] = [Number(e.body.round), String(e.body.thetaSha256)];
    if (e.type === 'commit') [round, theta] = [Number(e.body.round), String(e.body.thetaSha256)];
  }
  const out: CommitBody[] = [];
  const unverified = (r: number, peerId: string): MemberOutcome => ({
    peerId,
    verdict: 'unverified',
    reason: 'the coordinator stopped before the round was verified',
    tokens: 0,
    score: 0,
    credits: 0,
    assignmentDigest: assignmentId(cfg.manifestSha256, cfg.seed, r, peerId, cfg.innerSteps, cfg.batchSize, cfg.seqLen, cfg.shardsPerRound ?? 0),
  });
  for (const e of roundLog) {
    if (e.round <= round || e.round > state.round) continue;
    out.push({ round: e.round, attempt: e.attempt, prevThetaSha256: theta, thetaSha256: e.thetaSha256, ring: [...e.ring], members: e.members.map((p) => unverified(e.round, p)) });
    [round, theta] = [e.round, e.thetaSha256];
  }
  if (state.round > round && state.thetaHash !== theta) {
    out.push({ round: state.round, attempt: 0, prevThetaSha256: theta, thetaSha256: state.thetaHash, ring: [], members: [] });
  }
  return out;
}

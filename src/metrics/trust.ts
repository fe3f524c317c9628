// The validator's metrics (coordinator): checks of members' work by result, failures by reason, members
// excluded, and ledger entries by type. Labels are closed sets; never a peer id.
import type { Counter } from 'prom-client';
import { MetricsRegistry } from './registry';

export const TRUST_FAILURE_REASONS = ['bad_tokens', 'replayed_delta', 'norm_outlier', 'delta_mismatch', 'useful_work', 'delta_missing', 'transcript_mismatch', 'ring_mismatch', 'scale_proof', 'validator_mismatch', 'other'] as const;
/** What became of a useful-work check handed to a validator member (audits: the coordinator measured it again). */
export const DELEGATED_OUTCOMES = ['measured', 'declined', 'audit_agreed', 'audit_disagreed'] as const;
export type DelegatedOutcome = (typeof DELEGATED_OUTCOMES)[number];
export type TrustFailureReason = (typeof TRUST_FAILURE_REASONS)[number];
export const LEDGER_ENTRY_TYPES = ['genesis', 'join', 'leave', 'drop', 'commit', 'abandon'] as const;

/** The reason label of a failure message (the word before the first colon, as the checks write them). */
export function trustFailureReason(message: string | undefined): TrustFailureReason {
  const m = message ?? '';
  if (/^claims \d+ tokens/.test(m)) return 'bad_tokens';
  if (m.startsWith('replayed-delta')) return 'replayed_delta';
  if (m.startsWith('norm-outlier')) return 'norm_outlier';
  if (m.startsWith('delta-mismatch') || m.startsWith('norm-mismatch') || m.startsWith('delta-malformed')) return 'delta_mismatch';
  if (m.startsWith('useful-work')) return 'useful_work';
  if (m.startsWith('delta-not-received')) return 'delta_missing';
  if (m.startsWith('transcript-mismatch')) return 'transcript_mismatch';
  if (m.startsWith('ring-mismatch')) return 'ring_mismatch';
  if (m.startsWith('scale-proof') || m.startsWith('norm-claim')) return 'scale_proof';
  if (m.startsWith('validator-mismatch')) return 'validator_mismatch';
  return 'other';
}

export class TrustMetrics {
  readonly checks: Counter<'result'>;
  readonly failures: Counter<'reason'>;
  readonly exclusions: Counter;
  readonly ledgerEntries: Counter<'type'>;
  readonly delegatedChecks: Counter<'outcome'>;

  constructor(registry: MetricsRegistry) {
    this.checks = registry.counter({ name: 'covenant_trust_checks_total', help: 'Useful-work checks of members by result.', labels: { result: ['pass', 'fail'] } });
    this.failures = registry.counter({ name: 'covenant_trust_failures_total', help: 'Members failed by a check, by reason (commit-time checks and useful-work checks).', labels: { reason: TRUST_FAILURE_REASONS } });
    this.exclusions = registry.counter({ name: 'covenant_trust_exclusions_total', help: 'Members excluded from rounds for a penalty.' });
    this.ledgerEntries = registry.counter({ name: 'covenant_ledger_entries_total', help: 'Entries appended to the credit ledger, by type.', labels: { type: LEDGER_ENTRY_TYPES } });
    this.delegatedChecks = registry.counter({ name: 'covenant_trust_delegated_checks_total', help: 'Useful-work checks handed to validator members, by outcome (audits: measured again by the coordinator).', labels: { outcome: DELEGATED_OUTCOMES } });
  }

  delegated(outcome: DelegatedOutcome): void {
    this.delegatedChecks.inc({ outcome });
  }

  check(ok: boolean): void {
    this.checks.inc({ result: ok ? 'pass' : 'fail' });
  }

  failure(message: string | undefined): void {
    this.failures.inc({ reason: trustFailureReason(message) });
  }

  excluded(): void {
    this.exclusions.inc();
  }

  ledgerEntry(type: (typeof LEDGER_ENTRY_TYPES)[number]): void {
    this.ledgerEntries.inc({ type });
  }
}

// Membership and round metrics, for both roles: the round number, members, joins/leaves/drops, resyncs,
// re-plans, committed rounds and how long rounds take. The coordinator binds the live gauges to its
// membership table and round state (read at every scrape); a worker sets them when its round changes.
// The role ('worker' | 'coordinator') is a const label on every series (see registry.ts).
import type { Counter, Gauge, Histogram } from 'prom-client';
import { count, MetricsRegistry, nonNegative, readSource } from './registry';

/**
 * Round duration buckets (seconds), 1 s to 2 h: a demo round of a few inner steps on loopback takes
 * seconds; a real round is H = 100–500 inner steps plus the all-reduce, minutes to an hour.
 */
export const ROUND_DURATION_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200] as const;

/** Why a member resynced: its θ hash disagreed after a round, or it was behind (new, restarted, late). */
export const RESYNC_REASONS = ['hash_mismatch', 'behind'] as const;
export type ResyncReason = (typeof RESYNC_REASONS)[number];

export class MembershipMetrics {
  readonly round: Gauge;
  readonly roundsCommitted: Counter;
  readonly roundDuration: Histogram;
  readonly replans: Counter;
  readonly members: Gauge;
  readonly minMembers: Gauge;
  readonly joins: Counter;
  readonly leaves: Counter;
  readonly drops: Counter;
  readonly resyncs: Counter<'reason'>;
  private roundSource?: () => number;
  private membersSource?: () => number;
  private roundValue = NaN;
  private membersValue = NaN;

  constructor(registry: MetricsRegistry) {
    this.round = registry.gauge({
      name: 'covenant_round_number',
      help: 'Current round (coordinator: the open round; worker: the round it works on); NaN before the first.',
      collect: (g) => g.set(readSource(this.roundSource, this.roundValue)),
    });
    this.roundsCommitted = registry.counter({ name: 'covenant_rounds_committed_total', help: 'Rounds committed (the members\' θ hashes agreed).' });
    this.roundDuration = registry.histogram({
      name: 'covenant_round_duration_seconds',
      help: 'Wall time of a committed round, from its start to its commit.',
      buckets: ROUND_DURATION_BUCKETS,
    });
    this.replans = registry.counter({ name: 'covenant_round_replans_total', help: 'Ring re-plans after a failed all-reduce (coordinator: issued; worker: followed).' });
    this.members = registry.gauge({
      name: 'covenant_swarm_members',
      help: 'Members (coordinator: live members; worker: members of its current round); NaN before the first.',
      collect: (g) => g.set(readSource(this.membersSource, this.membersValue)),
    });
    this.minMembers = registry.gauge({ name: 'covenant_swarm_min_members', help: 'Minimum members the run needs to start a round (run config).' });
    this.joins = registry.counter({ name: 'covenant_swarm_joins_total', help: 'Members admitted (coordinator) or joins done (worker).' });
    this.leaves = registry.counter({ name: 'covenant_swarm_leaves_total', help: 'Members that left gracefully.' });
    this.drops = registry.counter({ name: 'covenant_swarm_drops_total', help: 'Members dropped for missed heartbeats.' });
    this.resyncs = registry.counter({
      name: 'covenant_swarm_resyncs_total',
      help: 'State resyncs (coordinator: ordered; worker: done) by reason.',
      labels: { reason: RESYNC_REASONS },
    });
    this.minMembers.set(NaN);
  }

  /** Sets the round number (a worker, when its round changes). */
  setRound(round: number): void {
    this.roundValue = count('round', round);
  }

  /** Reads the round number from a live source at every scrape (the coordinator's round state). */
  bindRound(source: () => number): void {
    if (typeof source !== 'function') throw new TypeError('bindRound needs a function returning the round number');
    this.roundSource = source;
  }

  /** Sets the member count (a worker, from its round's plan). */
  setMembers(members: number): void {
    this.membersValue = count('members', members);
  }

  /** Reads the member count from a live source at every scrape (the coordinator's membership table). */
  bindMembers(source: () => number): void {
    if (typeof source !== 'function') throw new TypeError('bindMembers needs a function returning the member count');
    this.membersSource = source;
  }

  setMinMembers(min: number): void {
    this.minMembers.set(count('minMembers', min));
  }

  join(): void {
    this.joins.inc();
  }

  leave(): void {
    this.leaves.inc();
  }

  drop(): void {
    this.drops.inc();
  }

  resync(reason: ResyncReason): void {
    if (!(RESYNC_REASONS as readonly string[]).includes(reason)) {
      throw new RangeError(`Expected one of ${RESYNC_REASONS.join(', ')} for reason but received ${JSON.stringify(reason)}`);
    }
    this.resyncs.inc({ reason });
  }

  replan(): void {
    this.replans.inc();
  }

  /** A round was committed after `seconds`. */
  roundCommitted(seconds: number): void {
    this.roundDuration.observe(nonNegative('seconds', seconds));
    this.roundsCommitted.inc();
  }
}

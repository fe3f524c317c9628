// A worker's data and validator-role metrics: shards and committed states fetched by source (a data peer or
// the coordinator), shards a peer sent that failed their check, and the useful-work checks it ran for the
// coordinator as a validator member. Labels are closed sets; never a peer id.
import type { Counter } from 'prom-client';
import { MetricsRegistry } from './registry';

export const DATA_SOURCES = ['peer', 'coordinator'] as const;
export type DataSource = (typeof DATA_SOURCES)[number];
export const VALIDATOR_RESULTS = ['submitted', 'declined'] as const;

export class DataMetrics {
  readonly shardFetches: Counter<'source'>;
  readonly peerFailures: Counter;
  readonly stateFetches: Counter<'source'>;
  readonly validatorChecks: Counter<'result'>;

  constructor(registry: MetricsRegistry) {
    this.shardFetches = registry.counter({ name: 'covenant_shard_fetches_total', help: 'Shards fetched and checked, by source.', labels: { source: DATA_SOURCES } });
    this.peerFailures = registry.counter({ name: 'covenant_data_peer_failures_total', help: 'Shards, manifests or states a data peer did not deliver or sent wrong (refused before use).' });
    this.stateFetches = registry.counter({ name: 'covenant_state_fetches_total', help: 'Committed global states fetched for a resync, by source.', labels: { source: DATA_SOURCES } });
    this.validatorChecks = registry.counter({ name: 'covenant_validator_checks_total', help: 'Useful-work checks this member ran as a validator, by result.', labels: { result: VALIDATOR_RESULTS } });
  }
}

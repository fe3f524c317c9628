// All-reduce metrics of a worker: how long each ring all-reduce took, bytes on the wire, bus bandwidth,
// compression against fp32, and failures by reason. The worker calls observe() with what allReduce()
// resolved to and failure() with what it rejected with.
import type { Counter, Gauge, Histogram } from 'prom-client';
import type { AllReduceResult, CommErrorCode } from '../native';
import { count, MetricsRegistry, nonNegative } from './registry';

/**
 * All-reduce duration buckets (seconds), 10 ms to 10 min. Each rank sends 2(N−1)/N of the payload: the
 * `tiny` model's few hundred KB take milliseconds on loopback; `gpt2` (124M parameters) is about 128 MB
 * in int8 (500 MB in fp32), so about 2 s at 1 Gbit/s, 20 s at 100 Mbit/s, and minutes on a slow link or
 * when a timeout ends it.
 */
export const ALLREDUCE_DURATION_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600] as const;

/** Why an all-reduce failed: the native CommError codes, lower-cased without COMM_, plus 'other'. */
export const ALLREDUCE_FAILURE_REASONS = ['timeout', 'closed', 'protocol', 'auth', 'aborted', 'io', 'args', 'other'] as const;
export type AllReduceFailureReason = (typeof ALLREDUCE_FAILURE_REASONS)[number];

const REASON_OF_CODE: Record<CommErrorCode, AllReduceFailureReason> = {
  COMM_TIMEOUT: 'timeout',
  COMM_CLOSED: 'closed',
  COMM_PROTOCOL: 'protocol',
  COMM_AUTH: 'auth',
  COMM_ABORTED: 'aborted',
  COMM_IO: 'io',
  COMM_ARGS: 'args',
};

/** The failure reason of anything an all-reduce rejected with (a CommError's code), 'other' if unknown. */
export function failureReason(e: unknown): AllReduceFailureReason {
  if (typeof e === 'string' && (ALLREDUCE_FAILURE_REASONS as readonly string[]).includes(e)) return e as AllReduceFailureReason;
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code in REASON_OF_CODE ? REASON_OF_CODE[code as CommErrorCode] : 'other';
}

/** Bytes one rank of an N-rank ring sends for a payload of `bytes`: 2(N−1)/N of it (reduce-scatter, then all-gather). */
export function ringBytesPerRank(bytes: number, ranks: number): number {
  return ranks < 2 ? 0 : (2 * (ranks - 1) * bytes) / ranks;
}

export interface AllReduceObservation extends Pick<AllReduceResult, 'seconds' | 'bytesSent' | 'bytesReceived'> {
  /** Ranks in the ring. */
  ranks: number;
  /** fp32 elements of the tensor averaged. */
  elements: number;
}

export class AllReduceMetrics {
  readonly duration: Histogram;
  readonly sentBytes: Counter;
  readonly receivedBytes: Counter;
  readonly busbw: Gauge;
  readonly compressionRatio: Gauge;
  readonly ranks: Gauge;
  readonly failures: Counter<'reason'>;

  constructor(registry: MetricsRegistry) {
    this.duration = registry.histogram({
      name: 'covenant_allreduce_duration_seconds',
      help: 'Wall time of a successful ring all-reduce (AllReduceResult.seconds).',
      buckets: ALLREDUCE_DURATION_BUCKETS,
    });
    this.sentBytes = registry.counter({ name: 'covenant_allreduce_sent_bytes_total', help: 'Bytes sent by all-reduces (frame headers and handshakes included).' });
    this.receivedBytes = registry.counter({ name: 'covenant_allreduce_received_bytes_total', help: 'Bytes received by all-reduces (frame headers and handshakes included).' });
    this.busbw = registry.gauge({
      name: 'covenant_allreduce_busbw_bytes_per_second',
      help: 'Bus bandwidth of the last all-reduce: bytes this rank sent / seconds (for a ring, algbw × 2(N−1)/N of the wire payload); compare with the link.',
    });
    this.compressionRatio = registry.gauge({
      name: 'covenant_allreduce_compression_ratio',
      help: 'Bytes an fp32 ring all-reduce of the same tensor would send / bytes the last one sent (about 3.9 for int8, block 128).',
    });
    this.ranks = registry.gauge({ name: 'covenant_allreduce_ranks', help: 'Ranks in the last all-reduce ring.' });
    this.failures = registry.counter({
      name: 'covenant_allreduce_failures_total',
      help: 'Failed all-reduces by reason (the native CommError code).',
      labels: { reason: ALLREDUCE_FAILURE_REASONS },
    });
    this.busbw.set(NaN);
    this.compressionRatio.set(NaN);
  }

  /** A collective succeeded: what allReduce() resolved to, with the ring size and the tensor's length. */
  observe(o: AllReduceObservation): void {
    if (typeof o !== 'object' || o === null) throw new TypeError('observe needs { seconds, bytesSent, bytesReceived, ranks, elements }');
    const seconds = nonNegative('seconds', o.seconds);
    const sent = count('bytesSent', o.bytesSent);
    const received = count('bytesReceived', o.bytesReceived);
    const ranks = count('ranks', o.ranks);
    const elements = count('elements', o.elements);
    if (ranks < 1) throw new RangeError(`Expected an integer >= 1 for ranks but received ${ranks}`);
    this.duration.observe(seconds);
    this.sentBytes.inc(sent);
    this.receivedBytes.inc(received);
    this.ranks.set(ranks);
    // One rank alone moves nothing: bandwidth and compression are undefined, so the last values stay.
    if (ranks >= 2 && sent > 0) {
      if (seconds > 0) this.busbw.set(sent / seconds);
      this.compressionRatio.set(ringBytesPerRank(4 * elements, ranks) / sent);
    }
  }

  /** A collective failed; `e` is the rejection (a CommError) or a reason. */
  failure(e: unknown): AllReduceFailureReason {
    const reason = failureReason(e);
    this.failures.inc({ reason });
    return reason;
  }
}

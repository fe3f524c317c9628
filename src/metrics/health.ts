// Liveness and readiness checks behind /healthz and /readyz. A check returns true, false, or
// { ok, reason }; the reason is what /readyz and /healthz say with their 503.
//
// Heartbeat is the usual liveness check: the process's main loop (a worker's round loop, the
// coordinator's round timer) calls beat() every time it goes round, and the check fails when no beat
// came for longer than the bound. Choose the bound above the longest legitimate gap (an inner step, an
// all-reduce up to its timeout, a checkpoint write); a failing /healthz asks the supervisor to restart.
import { nonNegative } from './registry';

export interface HealthStatus {
  ok: boolean;
  /** Why not (shown in the 503 body); ignored when ok. */
  reason?: string;
}

export type HealthCheck = () => boolean | HealthStatus;

/** Runs a check and normalizes its answer; a check that throws or returns garbage fails, with the reason. */
export function runHealthCheck(check: HealthCheck): HealthStatus {
  try {
    const r = check();
    if (r === true) return { ok: true };
    if (r === false) return { ok: false, reason: 'check returned false' };
    if (typeof r === 'object' && r !== null && typeof r.ok === 'boolean') {
      return r.ok ? { ok: true } : { ok: false, reason: typeof r.reason === 'string' && r.reason !== '' ? r.reason : 'check returned ok: false' };
    }
    return { ok: false, reason: `check returned ${typeof r}, not a boolean or { ok, reason }` };
  } catch (e) {
    return { ok: false, reason: `check threw: ${e instanceof Error ? e.message : String(e)}` };
  }
}

export class Heartbeat {
  readonly maxSilenceSeconds: number;
  private last: number;
  private readonly now: () => number;

  /** Fails after `maxSilenceSeconds` without a beat; the clock starts at construction. */
  constructor(maxSilenceSeconds: number, now: () => number = Date.now) {
    this.maxSilenceSeconds = nonNegative('maxSilenceSeconds', maxSilenceSeconds);
    this.now = now;
    this.last = now();
  }

  beat(): void {
    this.last = this.now();
  }

  /** Seconds since the last beat. */
  silenceSeconds(): number {
    return (this.now() - this.last) / 1000;
  }

  /** A HealthCheck: ok while the last beat is recent enough. */
  readonly check: HealthCheck = () => {
    const s = this.silenceSeconds();
    return s <= this.maxSilenceSeconds
      ? { ok: true }
      : { ok: false, reason: `main loop silent for ${s.toFixed(1)} s (bound ${this.maxSilenceSeconds} s)` };
  };
}

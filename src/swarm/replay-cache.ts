// The nonces a server has accepted recently, bounded in time and count. A request is refused as stale once
// its timestamp is more than the skew away from the server's clock, so a nonce only has to be remembered
// for 2 × skew after it arrived (its timestamp may run up to one skew ahead of the clock); entries then
// expire in arrival order and leave from the front of an insertion-ordered Map in O(1) each.
import { invalidParameter } from '../train/model-config';

export type ReplayCheck = 'fresh' | 'replayed' | 'full';

export class ReplayCache {
  /** key → expiry (ms, the server's clock); Map iteration order is arrival order. */
  readonly #entries = new Map<string, number>();

  /**
   * @param retainMs how long an accepted nonce is remembered (2 × the allowed skew)
   * @param maxEntries hard bound on memory: when full of unexpired entries, new requests are refused
   */
  constructor(
    readonly retainMs: number,
    readonly maxEntries: number,
  ) {
    if (!Number.isFinite(retainMs) || retainMs <= 0) throw new RangeError(invalidParameter('retainMs', 'a positive number', retainMs));
    if (!Number.isInteger(maxEntries) || maxEntries <= 0) throw new RangeError(invalidParameter('maxEntries', 'a positive integer', maxEntries));
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Drops the expired entries at the front. A clock that went back only keeps entries longer. */
  evict(now: number): void {
    for (const [key, expiry] of this.#entries) {
      if (expiry > now) break;
      this.#entries.delete(key);
    }
  }

  /** Records `key` unless it was seen within the retention time ('replayed') or the cache is full. */
  checkAndAdd(key: string, now: number): ReplayCheck {
    this.evict(now);
    if (this.#entries.has(key)) return 'replayed';
    if (this.#entries.size >= this.maxEntries) return 'full';
    this.#entries.set(key, now + this.retainMs);
    return 'fresh';
  }
}

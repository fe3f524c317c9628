// Range checks for numeric config fields, shared by every config schema: one message format naming the field.
import { invalidParameter } from './train/model-config';

export interface NumberLimit {
  int: boolean;
  min: number;
  max?: number;
  /** Exclusive upper bound. */
  below?: number;
}

/** Throws a TypeError (not a number) or RangeError (out of range) naming `${where}.${key}`. */
export function checkNumberFields(values: Record<string, unknown>, limits: Record<string, NumberLimit>, where: string): void {
  for (const [key, lim] of Object.entries(limits)) {
    const v = values[key];
    const expected = `${lim.int ? 'an integer' : 'a number'} >= ${lim.min}${lim.max !== undefined ? ` and <= ${lim.max}` : ''}${lim.below !== undefined ? ` and < ${lim.below}` : ''}`;
    if (typeof v !== 'number') throw new TypeError(invalidParameter(`${where}.${key}`, expected, v));
    const bad = !Number.isFinite(v) || (lim.int && !Number.isInteger(v)) || v < lim.min || (lim.max !== undefined && v > lim.max) || (lim.below !== undefined && v >= lim.below);
    if (bad) throw new RangeError(invalidParameter(`${where}.${key}`, expected, v));
  }
}

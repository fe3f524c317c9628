// A bench row (one measurement, one entry of rows in bench/out/NAME.json) and reading its numeric fields.

export type Row = Record<string, unknown>;

/** The number under `k`, or NaN where the row or the number is missing. */
export const num = (r: Row | undefined, k: string): number => (r && typeof r[k] === 'number' ? (r[k] as number) : NaN);

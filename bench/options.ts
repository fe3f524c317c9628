// The options every bench runs with, parsed from the command line by run.ts.

export interface BenchOptions {
  /** undefined: each bench's default (all hardware threads for gemm/attention, 2 for train). */
  threads?: number;
  quick: boolean;
}

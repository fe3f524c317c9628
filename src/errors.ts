// Error classes with a stable `code`, shared by every layer, and a helper to narrow `unknown` in catch blocks.

/** Stable error codes; callers switch on these, never on message text. */
export type ErrorCode = 'USAGE' | 'DATA_CORRUPT' | 'CHECKPOINT_CORRUPT' | (string & {});

/** Base class for every error covenant raises on purpose. `code` is stable; the message is for people. */
export class CovenantError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A data shard or manifest does not match what was recorded for it. */
export class DataCorruptError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DATA_CORRUPT', message, options);
  }
}

/** A checkpoint file is malformed, truncated or fails its checksum. */
export class CheckpointCorruptError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CHECKPOINT_CORRUPT', message, options);
  }
}

/** True when `e` carries the given stable code (works for Node's system errors too, e.g. 'ENOENT'). */
export function hasCode(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

/** The message of anything thrown. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

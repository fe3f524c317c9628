// A tiny typed flag parser for the CLI: the spec declares each flag's type, default and limits; every
// mistake becomes a UsageError (code 'USAGE', exit code 2) whose message names the flag.
import { CovenantError } from '../errors';
import { invalidParameter } from '../train/model-config';

/** A command-line mistake; the CLI prints the message (and usage) and exits with code 2. */
export class UsageError extends CovenantError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

export type FlagType = 'string' | 'int' | 'float' | 'bool' | 'string[]';

type ValueOf<T extends FlagType> = T extends 'string'
  ? string
  : T extends 'int' | 'float'
    ? number
    : T extends 'bool'
      ? boolean
      : string[];

/**
 * One flag. The spec key is camelCase (`shardTokens`); on the command line it is kebab-case
 * (`--shard-tokens`). A bool flag is `--x` (true) or `--no-x` (false); every flag also takes `--x=VALUE`.
 * A string[] flag repeats (`--input A --input B`) or takes several values (`--input A B`), up to the next
 * argument that starts with `--`.
 */
export interface FlagSpec<T extends FlagType = FlagType> {
  type: T;
  default?: ValueOf<T>;
  required?: boolean;
  /** One line for the usage text. */
  description?: string;
  /** Placeholder for the value in the usage text (e.g. 'DIR'). */
  valueName?: string;
  /** Allowed values (string and string[] flags). */
  choices?: readonly string[];
  /** Inclusive limits (int and float flags). */
  min?: number;
  max?: number;
  /** Exclusive limits (float flags), e.g. a fraction in [0, 1). */
  above?: number;
  below?: number;
}

export type ArgSpec = Record<string, FlagSpec>;

type Defined<F> = F extends { required: true } ? true : F extends { default: unknown } ? true : F extends { type: 'bool' | 'string[]' } ? true : false;

/** The parsed values, keyed like the spec; `_` holds positional arguments. */
export type ParsedArgs<S extends ArgSpec> = {
  [K in keyof S]: Defined<S[K]> extends true ? ValueOf<S[K]['type']> : ValueOf<S[K]['type']> | undefined;
} & { _: string[] };

export interface ParseOptions {
  /** Accept positional arguments (collected in `_`); otherwise they are a usage error. */
  positionals?: boolean;
}

/** `shardTokens` → `shard-tokens`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** What a flag expects, in words, for error messages and usage. */
function expected(spec: FlagSpec): string {
  if (spec.choices) return `one of ${spec.choices.join(', ')}`;
  switch (spec.type) {
    case 'bool':
      return 'true or false';
    case 'int':
      if (spec.min === 1) return `a positive integer${range({ ...spec, min: undefined })}`;
      if (spec.min === 0) return `a non-negative integer${range({ ...spec, min: undefined })}`;
      return `an integer${range(spec)}`;
    case 'float':
      return `a number${range(spec)}`;
    default:
      return spec.valueName ? `a value (${spec.valueName})` : 'a value';
  }
}

function range(spec: FlagSpec): string {
  const parts: string[] = [];
  if (spec.min !== undefined) parts.push(`>= ${spec.min}`);
  if (spec.above !== undefined) parts.push(`> ${spec.above}`);
  if (spec.max !== undefined) parts.push(`<= ${spec.max}`);
  if (spec.below !== undefined) parts.push(`< ${spec.below}`);
  return parts.length ? ` ${parts.join(' and ')}` : '';
}

const NUMBER_RE = /^[+-]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

function convert(flag: string, spec: FlagSpec, raw: string): string | number | boolean {
  const bad = () => new UsageError(invalidParameter(flag, expected(spec), raw));
  switch (spec.type) {
    case 'bool': {
      const v = raw.toLowerCase();
      if (['true', '1', 'yes'].includes(v)) return true;
      if (['false', '0', 'no'].includes(v)) return false;
      throw bad();
    }
    case 'int':
    case 'float': {
      if (!NUMBER_RE.test(raw)) throw bad();
      const n = Number(raw.replace(/_/g, ''));
      if (!Number.isFinite(n)) throw bad();
      if (spec.type === 'int' && !Number.isSafeInteger(n)) throw bad();
      if (spec.min !== undefined && n < spec.min) throw bad();
      if (spec.max !== undefined && n > spec.max) throw bad();
      if (spec.above !== undefined && !(n > spec.above)) throw bad();
      if (spec.below !== undefined && !(n < spec.below)) throw bad();
      return n;
    }
    default:
      if (spec.choices && !spec.choices.includes(raw)) throw bad();
      return raw;
  }
}

/** Edit distance, for "did you mean" on misspelled flags. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

function unknownFlag(name: string, byFlag: Map<string, string>): UsageError {
  const known = [...byFlag.keys()];
  const close = known.filter((k) => distance(k, name) <= Math.max(1, Math.floor(k.length / 4)));
  const hint = close.length ? ` Did you mean ${close.map((k) => `--${k}`).join(' or ')}?` : '';
  const list = known.length ? ` (known: ${known.map((k) => `--${k}`).join(', ')})` : ' (this command takes no flags)';
  return new UsageError(`Unknown flag --${name}${list}.${hint}`);
}

/** Checks the spec itself; a bad spec is a programming error, not a usage error. */
function checkSpec(spec: ArgSpec): Map<string, string> {
  const byFlag = new Map<string, string>();
  for (const [key, f] of Object.entries(spec)) {
    if (key === '_') throw new TypeError('Flag spec key "_" is reserved for positional arguments');
    if (!['string', 'int', 'float', 'bool', 'string[]'].includes(f.type)) {
      throw new TypeError(invalidParameter(`spec.${key}.type`, 'string, int, float, bool or string[]', f.type));
    }
    byFlag.set(flagName(key), key);
  }
  return byFlag;
}

/** Parses `argv` (without the node binary, script and command words) against `spec`. */
export function parseArgs<S extends ArgSpec>(argv: readonly string[], spec: S, options: ParseOptions = {}): ParsedArgs<S> {
  const byFlag = checkSpec(spec);
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];

  let i = 0;
  while (i < argv.length) {
    const arg = argv[i++];
    if (arg === '--') {
      positionals.push(...argv.slice(i));
      break;
    }
    if (!arg.startsWith('--') || arg.length === 2) {
      if (!options.positionals) throw new UsageError(`Unexpected argument ${JSON.stringify(arg)}: flags start with --`);
      positionals.push(arg);
      continue;
    }

    // --name, --name=value, --no-name
    const eq = arg.indexOf('=');
    let name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    let negated = false;
    if (!byFlag.has(name) && name.startsWith('no-') && spec[byFlag.get(name.slice(3)) ?? '']?.type === 'bool') {
      name = name.slice(3);
      negated = true;
    }
    const key = byFlag.get(name);
    if (key === undefined) throw unknownFlag(name, byFlag);
    const f = spec[key];
    const flag = `--${name}`;

    if (f.type === 'bool') {
      if (negated && inline !== undefined) throw new UsageError(`--no-${name} takes no value`);
      if (key in values) throw new UsageError(`${flag} was given more than once`);
      values[key] = negated ? false : inline === undefined ? true : convert(flag, f, inline);
      continue;
    }

    if (f.type === 'string[]') {
      const list = (values[key] as string[] | undefined) ?? [];
      const start = list.length;
      if (inline !== undefined) list.push(convert(flag, f, inline) as string);
      else while (i < argv.length && !argv[i].startsWith('--')) list.push(convert(flag, f, argv[i++]) as string);
      if (list.length === start) throw new UsageError(`Expected at least one value for ${flag} but received none`);
      values[key] = list;
      continue;
    }

    if (key in values) throw new UsageError(`${flag} was given more than once`);
    let raw = inline;
    if (raw === undefined) {
      if (i >= argv.length || argv[i].startsWith('--')) {
        throw new UsageError(`Expected ${expected(f)} for ${flag} but received nothing`);
      }
      raw = argv[i++];
    }
    values[key] = convert(flag, f, raw);
  }

  // Defaults and required flags.
  for (const [key, f] of Object.entries(spec)) {
    if (key in values) continue;
    if (f.required) throw new UsageError(`Missing required flag --${flagName(key)} (expected ${expected(f)})`);
    if (f.default !== undefined) values[key] = Array.isArray(f.default) ? [...f.default] : f.default;
    else if (f.type === 'bool') values[key] = false;
    else if (f.type === 'string[]') values[key] = [];
  }
  values._ = positionals;
  return values as ParsedArgs<S>;
}

/** Usage text: one line per flag with its value, default and description. */
export function formatUsage(command: string, spec: ArgSpec): string {
  const lines = [`Usage: ${command}`];
  for (const [key, f] of Object.entries(spec)) {
    const value =
      f.type === 'bool'
        ? ''
        : ` ${f.choices ? f.choices.join('|') : (f.valueName ?? f.type.toUpperCase().replace('[]', ''))}${f.type === 'string[]' ? '...' : ''}`;
    const notes: string[] = [];
    if (f.required) notes.push('required');
    if (f.default !== undefined) notes.push(`default ${Array.isArray(f.default) ? f.default.join(' ') : String(f.default)}`);
    const left = `  --${flagName(key)}${value}`;
    const right = [f.description, notes.length ? `(${notes.join(', ')})` : ''].filter(Boolean).join(' ');
    lines.push(right ? `${left.padEnd(34)} ${right}` : left);
  }
  return lines.join('\n');
}

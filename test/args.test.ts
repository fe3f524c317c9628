// Tests for the CLI flag parser: types, defaults, repeatable flags, and usage errors that name the flag.
import { ArgSpec, flagName, formatUsage, parseArgs, UsageError } from '../src/cli/args';

const spec = {
  input: { type: 'string[]', required: true },
  out: { type: 'string', required: true },
  steps: { type: 'int', min: 1, default: 10 },
  lr: { type: 'float', above: 0 },
  valFraction: { type: 'float', min: 0, below: 1, default: 0.05 },
  tokenizer: { type: 'string', choices: ['gpt2', 'bytes'], default: 'gpt2' },
  verbose: { type: 'bool' },
  cuda: { type: 'bool', default: true },
} as const satisfies ArgSpec;

function usageError(argv: string[], s: ArgSpec = spec): UsageError {
  try {
    parseArgs(argv, s);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    expect((e as UsageError).code).toBe('USAGE');
    return e as UsageError;
  }
  throw new Error(`parseArgs(${JSON.stringify(argv)}) did not throw`);
}

describe('parseArgs', () => {
  test('parses every type and fills defaults', () => {
    const a = parseArgs(['--input', 'a.txt', '--out', 'd', '--steps', '5', '--lr', '3e-4', '--verbose'], spec);
    expect(a.input).toEqual(['a.txt']);
    expect(a.out).toBe('d');
    expect(a.steps).toBe(5);
    expect(a.lr).toBeCloseTo(3e-4);
    expect(a.valFraction).toBe(0.05);
    expect(a.tokenizer).toBe('gpt2');
    expect(a.verbose).toBe(true);
    expect(a.cuda).toBe(true);
    expect(a._).toEqual([]);
  });

  test('an optional flag without default is undefined; bools default to false', () => {
    const a = parseArgs(['--input', 'x', '--out', 'd'], spec);
    expect(a.lr).toBeUndefined();
    expect(a.verbose).toBe(false);
  });

  test('repeatable flags: --input A --input B and --input A B', () => {
    expect(parseArgs(['--input', 'A', '--input', 'B', '--out', 'd'], spec).input).toEqual(['A', 'B']);
    expect(parseArgs(['--input', 'A', 'B', 'C', '--out', 'd'], spec).input).toEqual(['A', 'B', 'C']);
    expect(parseArgs(['--input=A', '--input', 'B', '--out', 'd'], spec).input).toEqual(['A', 'B']);
  });

  test('--name=value, --no-flag, underscores in numbers', () => {
    const a = parseArgs(['--input=x', '--out=d', '--steps=10_000', '--no-cuda', '--verbose=false'], spec);
    expect(a.steps).toBe(10000);
    expect(a.cuda).toBe(false);
    expect(a.verbose).toBe(false);
    expect(a.out).toBe('d');
  });

  test('bad integer names the flag and what was expected', () => {
    expect(usageError(['--input', 'x', '--out', 'd', '--steps', 'x']).message).toBe(
      'Expected a positive integer for --steps but received "x"',
    );
    expect(usageError(['--input', 'x', '--out', 'd', '--steps', '1.5']).message).toContain('--steps');
    expect(usageError(['--input', 'x', '--out', 'd', '--steps', '0']).message).toContain('positive integer');
    expect(usageError(['--input', 'x', '--out', 'd', '--steps', '-3']).message).toContain('"-3"');
  });

  test('float ranges and choices', () => {
    expect(usageError(['--input', 'x', '--out', 'd', '--val-fraction', '1']).message).toBe(
      'Expected a number >= 0 and < 1 for --val-fraction but received "1"',
    );
    expect(usageError(['--input', 'x', '--out', 'd', '--lr', '0']).message).toContain('--lr');
    expect(usageError(['--input', 'x', '--out', 'd', '--lr', 'abc']).message).toContain('--lr');
    expect(usageError(['--input', 'x', '--out', 'd', '--tokenizer', 'bpe']).message).toBe(
      'Expected one of gpt2, bytes for --tokenizer but received "bpe"',
    );
  });

  test('unknown flags are named, with a suggestion when close', () => {
    const e = usageError(['--input', 'x', '--out', 'd', '--tokenzier', 'gpt2']);
    expect(e.message).toContain('Unknown flag --tokenzier');
    expect(e.message).toContain('Did you mean --tokenizer?');
    expect(usageError(['--frobnicate']).message).toContain('--frobnicate');
  });

  test('missing values, missing required flags, duplicates, positionals', () => {
    expect(usageError(['--input', 'x', '--out']).message).toContain('--out');
    expect(usageError(['--input', 'x', '--out', '--steps', '3']).message).toContain('--out');
    expect(usageError(['--out', 'd']).message).toBe('Missing required flag --input (expected a value)');
    expect(usageError(['--input', '--out', 'd']).message).toContain('--input');
    expect(usageError(['--input', 'x', '--out', 'd', '--out', 'e']).message).toContain('--out was given more than once');
    expect(usageError(['stray', '--input', 'x', '--out', 'd']).message).toContain('"stray"');
    const a = parseArgs(['p1', '--out', 'd', '--input', 'x', '--', '--not-a-flag'], spec, { positionals: true });
    expect(a._).toEqual(['p1', '--not-a-flag']);
  });

  test('a bad spec is a TypeError, not a usage error', () => {
    expect(() => parseArgs([], { x: { type: 'number' as never } })).toThrow(TypeError);
  });

  test('flag names and usage text', () => {
    expect(flagName('shardTokens')).toBe('shard-tokens');
    const u = formatUsage('covenant x', spec);
    expect(u).toContain('--val-fraction');
    expect(u).toContain('--tokenizer gpt2|bytes');
  });
});

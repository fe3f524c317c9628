// `covenant data prepare`: tokenize text into llm.c shards plus manifest.json, and print a short summary.
import { formatUsage, parseArgs } from './args';
import { CliIO, defaultIO } from './io';
import { DEFAULT_SHARD_TOKENS, DEFAULT_VAL_FRACTION, prepareData } from '../data/prepare';
import { manifestHash, splitTokens } from '../data/manifest';
import { TOKENIZER_NAMES } from '../data/tokenizer';

export const DATA_PREPARE_SPEC = {
  input: { type: 'string[]', required: true, valueName: 'PATH', description: "text file, directory or 'brown' (built-in corpus)" },
  tokenizer: { type: 'string', choices: TOKENIZER_NAMES, default: 'gpt2', description: 'GPT-2 BPE or raw UTF-8 bytes' },
  out: { type: 'string', required: true, valueName: 'DIR', description: 'output directory for shards and manifest.json' },
  shardTokens: { type: 'int', min: 1, max: 0x7fffffff, default: DEFAULT_SHARD_TOKENS, valueName: 'N', description: 'tokens per shard file' },
  valFraction: { type: 'float', min: 0, below: 1, default: DEFAULT_VAL_FRACTION, valueName: 'F', description: 'expected fraction of documents held out for val' },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const DATA_PREPARE_USAGE = formatUsage('covenant data prepare --input PATH... --out DIR [flags]', DATA_PREPARE_SPEC);

/** Runs the command; returns the exit code. Usage mistakes throw UsageError (exit code 2 in main). */
export async function runDataPrepare(argv: string[], io: CliIO = defaultIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(DATA_PREPARE_USAGE);
    return 0;
  }
  const args = parseArgs(argv, DATA_PREPARE_SPEC);
  const t0 = process.hrtime.bigint();
  const manifest = await prepareData({
    inputs: args.input,
    tokenizer: args.tokenizer,
    outDir: args.out,
    shardTokens: args.shardTokens,
    valFraction: args.valFraction,
    log: (line) => io.err(line),
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const count = (split: 'train' | 'val') => manifest.shards.filter((s) => s.split === split).length;
  io.out(`prepared ${args.out} with the ${manifest.tokenizer} tokenizer (vocab ${manifest.vocabSize}) in ${seconds.toFixed(2)} s`);
  io.out(`  train: ${splitTokens(manifest, 'train')} tokens in ${count('train')} shard(s)`);
  io.out(`  val:   ${splitTokens(manifest, 'val')} tokens in ${count('val')} shard(s)`);
  io.out(`  manifest sha256: ${manifestHash(manifest)}`);
  return 0;
}

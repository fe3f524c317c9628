// `covenant sample`: generate text from a checkpoint.
import fs from 'node:fs';
import { formatUsage, parseArgs, UsageError } from './args';
import { CliIO, defaultIO } from './io';
import { getTokenizer, isTokenizerName, TOKENIZER_NAMES } from '../data/tokenizer';
import { Engine } from '../native';
import { loadCheckpoint } from '../train/checkpoint';

export const SAMPLE_SPEC = {
  checkpoint: { type: 'string', required: true, valueName: 'FILE', description: 'a .safetensors checkpoint written by covenant train' },
  prompt: { type: 'string', default: '\n', valueName: 'TEXT', description: 'text to continue' },
  tokens: { type: 'int', min: 1, max: 100000, default: 100, description: 'tokens to generate' },
  temperature: { type: 'float', min: 0, default: 0.8, description: '0 = greedy' },
  topK: { type: 'int', min: 0, default: 40, description: 'sample among the k most likely tokens, 0 = all' },
  seed: { type: 'int', min: 0, max: 2147483647, default: 1, description: 'sampling seed' },
  tokenizer: { type: 'string', choices: TOKENIZER_NAMES, description: "override the checkpoint's tokenizer" },
  threads: { type: 'int', min: 0, default: 0, description: 'compute threads, 0 = all cores' },
  help: { type: 'bool', description: 'print this help' },
} as const;

export const SAMPLE_USAGE = formatUsage('covenant sample --checkpoint FILE --prompt TEXT [flags]', SAMPLE_SPEC);

export async function sampleText(opts: { checkpoint: string; prompt: string; tokens: number; temperature: number; topK: number; seed: number; tokenizer?: string; threads?: number }): Promise<string> {
  if (!fs.existsSync(opts.checkpoint)) throw new UsageError(`--checkpoint: no such file ${opts.checkpoint}`);
  const ck = await loadCheckpoint(opts.checkpoint);
  const name = opts.tokenizer ?? ck.extra.tokenizer;
  if (!isTokenizerName(name)) {
    throw new UsageError(`checkpoint ${opts.checkpoint} does not say which tokenizer it was trained with; pass --tokenizer ${TOKENIZER_NAMES.join('|')}`);
  }
  const tok = getTokenizer(name);
  if (tok.vocabSize > ck.model.vocabSize) throw new UsageError(`tokenizer ${name} (vocab ${tok.vocabSize}) does not fit the checkpoint's vocabulary (${ck.model.vocabSize})`);
  const engine = Engine.create({ model: ck.model, threads: opts.threads || undefined });
  try {
    engine.loadParams(ck.params);
    const prompt = [tok.eotToken, ...tok.encode(opts.prompt)];
    const out = await engine.generate(prompt, opts.tokens, { temperature: opts.temperature, topK: opts.topK, seed: opts.seed });
    return tok.decode(out.filter((id) => id < tok.vocabSize));
  } finally {
    engine.dispose();
  }
}

export async function runSample(argv: string[], io: CliIO = defaultIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(SAMPLE_USAGE);
    return 0;
  }
  const a = parseArgs(argv, SAMPLE_SPEC);
  const text = await sampleText({ ...a, tokenizer: a.tokenizer });
  io.out(a.prompt + text);
  return 0;
}

// `covenant demo` (what `npm start` runs): prepares the Brown corpus with the GPT-2 tokenizer, trains the
// `small` preset for a few minutes, and prints a sample.
import fs from 'node:fs';
import path from 'node:path';
import { formatUsage, parseArgs } from './args';
import { CliIO, defaultIO } from './io';
import { runTrain } from './train';
import { sampleText } from './sample';
import { prepareData } from '../data/prepare';
import { MANIFEST_FILE } from '../data/manifest';

export const DEMO_SPEC = {
  dir: { type: 'string', default: '.covenant-demo', valueName: 'DIR', description: 'working directory for data and checkpoints' },
  preset: { type: 'string', choices: ['tiny', 'small', 'gpt2'], default: 'small', description: 'model preset' },
  minutes: { type: 'float', min: 0.05, default: 3, description: 'training time budget' },
  threads: { type: 'int', min: 0, default: 0, description: 'compute threads, 0 = all cores' },
  prompt: { type: 'string', default: 'The jury said', description: 'sample prompt' },
  help: { type: 'bool', description: 'print this help' },
} as const;

export async function runDemo(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const a = parseArgs(argv, DEMO_SPEC);
  if (a.help) {
    io.out(formatUsage('covenant demo [flags]', DEMO_SPEC));
    return 0;
  }
  const dataDir = path.join(a.dir, 'brown-gpt2');
  const outDir = path.join(a.dir, `run-${a.preset}`);
  if (!fs.existsSync(path.join(dataDir, MANIFEST_FILE))) {
    io.out(`demo: preparing the Brown corpus with the GPT-2 tokenizer into ${dataDir}`);
    await prepareData({ inputs: ['brown'], tokenizer: 'gpt2', outDir: dataDir });
  }
  io.out(`demo: training the ${a.preset} preset for about ${a.minutes} minute(s)`);
  const code = await runTrain(
    ['--preset', a.preset, '--data', dataDir, '--out', outDir, '--steps', '100000', '--max-seconds', String(a.minutes * 60),
      '--batch-size', '8', '--seq-len', '64', '--lr', '1e-3', '--warmup-steps', '20', '--eval-interval', '100', '--eval-batches', '10',
      '--threads', String(a.threads)],
    io,
  );
  if (code !== 0) return code;
  const text = await sampleText({ checkpoint: path.join(outDir, 'latest.safetensors'), prompt: a.prompt, tokens: 60, temperature: 0.8, topK: 40, seed: 1, threads: a.threads });
  io.out(`\nsample: ${a.prompt}${text}`);
  return 0;
}

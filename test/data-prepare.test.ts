// Tests for `covenant data prepare`: shards and manifest from text files, directories and a Brown slice.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { runDataPrepare } from '../src/cli/data-prepare';
import { UsageError } from '../src/cli/args';
import { brownDocuments } from '../src/data/brown';
import { Manifest, manifestHash, parseManifest, readManifest, splitTokens } from '../src/data/manifest';
import { assignSplits, listDocuments, prepareData } from '../src/data/prepare';
import { readShard } from '../src/data/shard';
import { getTokenizer } from '../src/data/tokenizer';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-prepare-'));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Writes n small distinct documents into DIR/docs and returns the directory. */
function writeDocs(n: number): string {
  const dir = path.join(tmp, 'docs');
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const where = i % 3 === 0 ? path.join(dir, 'sub') : dir;
    fs.writeFileSync(path.join(where, `doc${String(i).padStart(3, '0')}.txt`), `Document number ${i}. ${'word '.repeat(i % 7)}Ünïcödé ${i * i}.\n`);
  }
  fs.writeFileSync(path.join(dir, '.hidden'), 'never read');
  return dir;
}

function shardTokens(dir: string, m: Manifest, split: 'train' | 'val'): number[] {
  return m.shards.filter((s) => s.split === split).flatMap((s) => Array.from(readShard(path.join(dir, s.file))));
}

/** A split's token stream cut at EOT into documents (each document starts with EOT). */
function documents(tokens: number[], eot: number): string[] {
  const out: string[] = [];
  let cur: number[] | undefined;
  for (const t of tokens) {
    if (t === eot) {
      if (cur) out.push(cur.join(','));
      cur = [];
    } else {
      expect(cur).toBeDefined(); // the stream starts with EOT
      cur!.push(t);
    }
  }
  if (cur) out.push(cur.join(','));
  return out;
}

test('text files: shards readable, manifest valid, counts add up, val disjoint from train', async () => {
  const src = writeDocs(40);
  const out = path.join(tmp, 'out');
  const tk = getTokenizer('gpt2');
  const m = await prepareData({ inputs: [src], tokenizer: 'gpt2', outDir: out, shardTokens: 64, valFraction: 0.2 });

  expect(parseManifest(JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')))).toEqual(m);
  expect(m.tokenizer).toBe('gpt2');
  expect(m.shards.length).toBeGreaterThan(2);
  expect(m.shards[0].file).toBe('val_000000.bin');
  for (const s of m.shards) {
    const bytes = fs.readFileSync(path.join(out, s.file));
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(s.sha256);
    expect(readShard(path.join(out, s.file)).length).toBe(s.tokens);
    expect(s.tokens).toBeLessThanOrEqual(64);
  }

  // Every document appears once, as EOT + its tokens, in exactly one split.
  const docs = listDocuments([src]);
  expect(docs).toHaveLength(40);
  const expected = docs.map((d) => tk.encode(d.read()).join(','));
  const train = documents(shardTokens(out, m, 'train'), tk.eotToken);
  const val = documents(shardTokens(out, m, 'val'), tk.eotToken);
  expect(val.length).toBeGreaterThan(0);
  expect(train.length + val.length).toBe(40);
  expect([...train, ...val].sort()).toEqual([...expected].sort());
  const trainSet = new Set(train);
  expect(val.filter((d) => trainSet.has(d))).toEqual([]);
  const total = expected.reduce((a, d) => a + d.split(',').length + 1, 0);
  expect(splitTokens(m, 'train') + splitTokens(m, 'val')).toBe(total);
});

test('deterministic: two runs give the same manifest apart from createdAt', async () => {
  const src = writeDocs(12);
  const a = await prepareData({ inputs: [src], tokenizer: 'bytes', outDir: path.join(tmp, 'a'), shardTokens: 100 });
  const b = await prepareData({ inputs: [src], tokenizer: 'bytes', outDir: path.join(tmp, 'b'), shardTokens: 100 });
  expect({ ...a, createdAt: '' }).toEqual({ ...b, createdAt: '' });
  expect(manifestHash(a)).toBe(manifestHash(b));
  const c = await prepareData({ inputs: [src], tokenizer: 'bytes', outDir: path.join(tmp, 'c'), shardTokens: 101 });
  expect(manifestHash(c)).not.toBe(manifestHash(a));
});

test('split assignment is per document id and keeps both splits non-empty', () => {
  const ids = Array.from({ length: 2000 }, (_, i) => `doc${i}`);
  const splits = assignSplits(ids, 0.05);
  const val = splits.filter((s) => s === 'val').length;
  expect(val).toBeGreaterThan(50);
  expect(val).toBeLessThan(150);
  // A document's split does not depend on the other documents (unless a split would be empty).
  expect(assignSplits(ids.slice(0, 1000), 0.05)).toEqual(splits.slice(0, 1000));
  expect(assignSplits(['a', 'b'], 0.01).sort()).toEqual(['train', 'val']);
  expect(assignSplits(['a', 'b'], 0)).toEqual(['train', 'train']);
});

test('a Brown slice with the gpt2 tokenizer, via the CLI', async () => {
  const slice = path.join(tmp, 'brown');
  fs.mkdirSync(slice);
  const docs = brownDocuments().slice(0, 20);
  for (const d of docs) fs.writeFileSync(path.join(slice, path.basename(d.id)), d.text);
  const out = path.join(tmp, 'out');
  const lines: string[] = [];
  const io = { out: (l: string) => lines.push(l), err: () => {} };
  expect(await runDataPrepare(['--input', slice, '--out', out, '--tokenizer', 'gpt2', '--shard-tokens', '20000', '--val-fraction', '0.1'], io)).toBe(0);
  const m = readManifest(out);
  const tk = getTokenizer('gpt2');
  const total = docs.reduce((a, d) => a + tk.encode(d.text).length + 1, 0);
  expect(splitTokens(m, 'train') + splitTokens(m, 'val')).toBe(total);
  expect(splitTokens(m, 'val')).toBeGreaterThan(0);
  expect(lines.join('\n')).toMatch(/train: \d+ tokens in \d+ shard/);
  const text = tk.decode(shardTokens(out, m, 'train').slice(0, 200));
  expect(text).toMatch(/^<\|endoftext\|>[A-Z]/);
});

test('the built-in corpus name "brown" and a stale shard cleanup', async () => {
  const out = path.join(tmp, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'train_000099.bin'), 'stale');
  const m = await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: out });
  expect(splitTokens(m, 'train')).toBeGreaterThan(5_000_000);
  expect(fs.existsSync(path.join(out, 'train_000099.bin'))).toBe(false);
});

test('bad inputs and options are refused, naming them', async () => {
  await expect(prepareData({ inputs: [path.join(tmp, 'nope')], tokenizer: 'gpt2', outDir: tmp })).rejects.toThrow(/inputs\[0\]/);
  await expect(prepareData({ inputs: ['brown'], tokenizer: 'bpe', outDir: tmp })).rejects.toThrow(/tokenizer/);
  await expect(prepareData({ inputs: ['brown'], tokenizer: 'gpt2', outDir: tmp, valFraction: 1 })).rejects.toThrow(/valFraction/);
  await expect(prepareData({ inputs: ['brown', 'brown'], tokenizer: 'gpt2', outDir: tmp })).rejects.toThrow(/inputs\[1\]/);
  await expect(runDataPrepare(['--out', tmp])).rejects.toThrow(UsageError);
});

// How well the useful-work check separates honest from cheating Δs, in process and without a swarm:
// `node dist/bench/useful-work-detection.js DATA_DIR [ROUNDS]` (DATA_DIR: `covenant data prepare --input brown
// --tokenizer bytes`). Three members train H = 12 AdamW steps on their windows from a shared θ each round;
// each honest Δ, a Δ trained on random tokens and the member's Δ of the round before are judged; the shared θ
// moves on with member 'aa'. Prints the counts that docs/protocol.md quotes.
import { assignedBatch } from '../src/diloco/assignment';
import { pseudoGradient } from '../src/diloco/outer-step';
import { DataLoader } from '../src/data/loader';
import { randomTokens } from '../src/diloco/hostile';
import { Engine, quantize } from '../src/native';
import { CompressedDelta } from '../src/trust/delta-blocks';
import { judgeUsefulWork, usefulWork } from '../src/trust/useful-work';

async function main(): Promise<void> {
  const [dir, roundsArg] = process.argv.slice(2);
  if (!dir) throw new Error('usage: node dist/bench/useful-work-detection.js DATA_DIR [ROUNDS]');
  const rounds = Number(roundsArg ?? 25);
  const loader = DataLoader.open(dir, { split: 'train' });
  const model = { vocabSize: loader.vocabSize, maxSeqLen: 64, numLayers: 2, numHeads: 4, channels: 64 };
  const train = Engine.create({ model, seed: 7, threads: 1 });
  const judge = Engine.create({ model, seed: 7, threads: 1 });
  const [H, B, T, block] = [12, 4, 64, 256];
  const opt = { lr: 3e-3, weightDecay: 0.1, gradClip: 1 };
  const counts = { honest: [0, 0], random: [0, 0], stale: [0, 0] };
  let stale: CompressedDelta | undefined;
  const compress = async (theta: Float32Array): Promise<CompressedDelta> => {
    const q = await quantize(pseudoGradient(theta, train.params()), block);
    return { codes: q.codes, scales: q.scales, block };
  };
  const check = async (theta: Float32Array, d: CompressedDelta, round: number, peerId: string, kind: keyof typeof counts) => {
    const r = await usefulWork(judge, loader, theta, d, { runSeed: 7, round, peerId, innerSteps: H, B, T, batches: H });
    counts[kind][0] += judgeUsefulWork(r).ok ? 0 : 1;
    counts[kind][1] += 1;
  };
  for (let round = 1; round <= rounds; round++) {
    const theta = Float32Array.from(train.params());
    for (const peer of ['aa', 'bb', 'cc']) {
      train.loadParams(theta);
      for (let s = 0; s < H; s++) await train.step(assignedBatch(loader, 7, round, peer, s, B, T), B, T, opt);
      const honest = await compress(theta);
      await check(theta, honest, round, peer, 'honest');
      if (peer === 'aa') {
        if (stale) await check(theta, stale, round, peer, 'stale');
        stale = honest;
      }
      train.loadParams(theta);
      for (let s = 0; s < H; s++) await train.step(randomTokens(B, T, loader.vocabSize), B, T, opt);
      await check(theta, await compress(theta), round, peer, 'random');
    }
    train.loadParams(theta);
    for (let s = 0; s < H; s++) await train.step(assignedBatch(loader, 7, round, 'aa', s, B, T), B, T, opt);
  }
  for (const [kind, [failed, n]] of Object.entries(counts)) console.log(`${kind.padEnd(7)} failed ${failed} of ${n}`);
  train.dispose();
  judge.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});

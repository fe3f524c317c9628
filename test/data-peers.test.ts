// Data served by peers: a worker started with --serve-data hands the run's manifest and the shards it holds to
// other members, who check every shard against the manifest before use. With a coordinator that has no data,
// members with empty data directories train on shards from the peer alone; a peer that serves a tampered shard
// is refused and the shard comes from the coordinator instead.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readManifest } from '../src/data/manifest';
import { prepareData } from '../src/data/prepare';
import { LocalSwarm, localRunConfig } from '../src/swarm/local-swarm';
import { parsePrometheusText, sampleValue } from './helpers/prom-text';

jest.setTimeout(300_000);

let tmp: string;
let dataDir: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-data-peers-'));
  dataDir = path.join(tmp, 'data');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir, shardTokens: 250_000 });
});

afterAll(() => {
  if (!process.env.COVENANT_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

const config = () => localRunConfig({ model: 'tiny', vocabSize: 257, innerSteps: 6, minMembers: 3, planDelayMs: 1000, shardsPerRound: 2 });

test('with a coordinator that has no data, members with empty directories get manifest and shards from a data peer', async () => {
  const swarm = new LocalSwarm({ dir: path.join(tmp, 'peer-only'), dataDir, workerData: 'fetch', coordinatorData: false, config: config(), workerArgs: ['--eval-every', '2'], metrics: true });
  try {
    await swarm.startCoordinator();
    const peer = swarm.startWorker('peer', { dataDir, args: ['--serve-data', '127.0.0.1:0'] });
    const serving = await swarm.waitFor(peer, (l) => l.event === 'data.serve', 60_000);
    expect(serving.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const peerId = (await swarm.waitFor(peer, (l) => l.event === 'worker.join', 60_000)).peerId;
    for (let i = 0; i < 2; i++) swarm.startWorker();
    await swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && (l.round as number) >= 3, 120_000);
    const listed = readManifest(dataDir).shards.length;
    for (const name of ['w1', 'w2']) {
      const lines = swarm.child(name).lines;
      expect(lines.find((l) => l.event === 'data.manifest')).toMatchObject({ from: peerId });
      const fetched = lines.filter((l) => l.event === 'data.shard');
      expect(fetched.length).toBeGreaterThan(0);
      for (const l of fetched) expect(l.from).toBe(peerId);
      const held = fs.readdirSync(swarm.workerDataDir(name)).filter((f) => f.endsWith('.bin'));
      expect(held.length).toBeLessThan(listed);
      expect(lines.some((l) => l.event === 'round.commit')).toBe(true);
    }
    // SREs see it too: the fetches counted by source.
    const res = await fetch(`${swarm.child('w1').metricsUrl!.replace(/\/?$/, '')}/metrics`.replace(/\/metrics\/metrics$/, '/metrics'));
    const families = parsePrometheusText(await res.text());
    expect(sampleValue(families, 'covenant_shard_fetches_total', { source: 'peer' })).toBeGreaterThan(0);
    expect(sampleValue(families, 'covenant_shard_fetches_total', { source: 'coordinator' })).toBe(0);
  } finally {
    await swarm.stop(10_000);
  }
});

test('a data peer that serves a tampered shard is refused; the shard comes from the coordinator', async () => {
  const bad = path.join(tmp, 'tampered');
  fs.cpSync(dataDir, bad, { recursive: true });
  const swarm = new LocalSwarm({ dir: path.join(tmp, 'tamper'), dataDir, workerData: 'fetch', config: config(), workerArgs: ['--eval-every', '0'] });
  try {
    await swarm.startCoordinator();
    const peer = swarm.startWorker('peer', { dataDir: bad, args: ['--serve-data', '127.0.0.1:0'] });
    await swarm.waitFor(peer, (l) => l.event === 'data.serve', 60_000);
    const peerId = (await swarm.waitFor(peer, (l) => l.event === 'worker.join', 60_000)).peerId;
    // Once the peer has loaded (and checked) its data, every train shard on its disk gets its last token
    // changed: what it serves from now on is not what the manifest lists.
    for (const sh of readManifest(dataDir).shards.filter((x) => x.split === 'train')) {
      const f = path.join(bad, sh.file);
      const bytes = fs.readFileSync(f);
      bytes[bytes.length - 1] ^= 0x01;
      fs.writeFileSync(f, bytes);
    }
    for (let i = 0; i < 2; i++) swarm.startWorker();
    const refused = await swarm.waitFor('w1', (l) => l.event === 'data.peer-failed' && l.peer === peerId && l.file !== 'manifest.json', 120_000);
    expect(String(refused.error)).toMatch(/sha-?256|checksum|does not match/i);
    const lines = swarm.child('w1').lines;
    const got = await swarm.waitFor('w1', (l) => l.event === 'data.shard' && l.file === refused.file, 60_000);
    expect(got.from).toBe('coordinator');
    expect(lines.filter((l) => l.event === 'data.shard' && l.from === peerId && String(l.file).includes('train'))).toEqual([]);
  } finally {
    await swarm.stop(10_000);
  }
});

describe.each([
  ['an honest data peer', undefined, 'peer'],
  ['a data peer that serves a changed momentum', 'tampered-state', 'coordinator'],
] as const)('a member that joins late, with %s', (_what, hostile, expectFrom) => {
  test(`takes the committed state from the ${expectFrom}`, async () => {
    const swarm = new LocalSwarm({ dir: path.join(tmp, `late-${hostile ?? 'honest'}`), dataDir, config: { ...config(), minMembers: 2 }, workerArgs: ['--eval-every', '0'] });
    try {
      await swarm.startCoordinator();
      const peer = swarm.startWorker('peer', { args: ['--serve-data', '127.0.0.1:0'], env: hostile ? { COVENANT_TEST_HOSTILE: hostile } : {} });
      const peerId = (await swarm.waitFor(peer, (l) => l.event === 'worker.join', 60_000)).peerId;
      swarm.startWorker();
      await swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && (l.round as number) >= 2, 120_000);
      const late = swarm.startWorker();
      const resync = await swarm.waitFor(late, (l) => l.event === 'state.resync', 60_000);
      expect(resync.from).toBe(expectFrom === 'peer' ? peerId : 'coordinator');
      if (hostile) {
        const refused = swarm.child(late).lines.find((l) => l.event === 'state.peer-failed');
        expect(refused).toMatchObject({ peer: peerId });
        expect(String(refused!.error)).toMatch(/not the expected/);
      }
      // Whatever it came from, the late member then agrees with the others: with whichever of them committed
      // the same round (under load a round can run without one of them).
      const commit = await swarm.waitFor(late, (l) => l.event === 'round.commit', 120_000);
      const other = await Promise.any(['w1', 'peer'].map((n) => swarm.waitFor(n, (l) => l.event === 'round.commit' && l.round === commit.round, 60_000)));
      expect(commit.thetaSha256).toBe(other.thetaSha256);
    } finally {
      await swarm.stop(10_000);
    }
  });
});

// Data by the shard: a worker that starts with an empty data directory fetches the manifest and only the
// shards its windows need from the coordinator, checks each against the manifest, and trains; a tampered
// shard is refused and never written.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataLoader, ShardMissingError } from '../src/data/loader';
import { assignedBatch, assignedRegion, assignedStarts } from '../src/diloco/assignment';
import { MANIFEST_FILE, readManifest } from '../src/data/manifest';
import { prepareData } from '../src/data/prepare';
import { ensureManifest, fetchShard, ShardServer } from '../src/data/shard-service';
import { DataCorruptError } from '../src/errors';
import { SignedClient } from '../src/swarm/grpc-client';
import { SignedServer } from '../src/swarm/grpc-server';
import { Identity } from '../src/swarm/identity';
import { coordinatorService, CoordinatorMethods } from '../src/swarm/proto';
import { LocalSwarm, localRunConfig } from '../src/swarm/local-swarm';
import { RequestVerifier } from '../src/swarm/signed-request';

jest.setTimeout(240_000);

let tmp: string;
let dataDir: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'covenant-shards-'));
  dataDir = path.join(tmp, 'data');
  await prepareData({ inputs: ['brown'], tokenizer: 'bytes', outDir: dataDir, shardTokens: 250_000 });
});
afterAll(() => {
  if (!process.env.COVENANT_KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

async function serve(dir: string): Promise<{ client: SignedClient<CoordinatorMethods>; close: () => Promise<void> }> {
  const shards = new ShardServer(dir, readManifest(dir));
  const server = new SignedServer({ verifier: new RequestVerifier({ runId: 'r' }) });
  server.addService(coordinatorService(), { getManifest: () => shards.manifest(), fetchShard: (req, ctx) => shards.shard(req.file, ctx.signal) });
  const port = await server.listen('127.0.0.1:0');
  const client = new SignedClient(coordinatorService(), { address: `127.0.0.1:${port}`, identity: Identity.generate(), runId: 'r' });
  return { client, close: async () => (client.close(), server.close(100)) };
}

test('a partial loader knows the split from the manifest, reads what it holds, fetches the rest checked; a tampered shard is refused', async () => {
  const { client, close } = await serve(dataDir);
  try {
    const mine = path.join(tmp, 'partial');
    await ensureManifest(client, mine);
    expect(fs.existsSync(path.join(mine, MANIFEST_FILE))).toBe(true);
    const full = DataLoader.open(dataDir, { split: 'train' });
    const part = DataLoader.open(mine, { split: 'train', partial: true });
    expect(part.numTokens).toBe(full.numTokens);
    expect(part.missing().length).toBe(full.manifest.shards.filter((s) => s.split === 'train').length);
    const out = new Int32Array(100);
    expect(() => part.read(300_000, 100, out)).toThrow(ShardMissingError);
    for (const e of part.shardsFor(300_000, 100)) await fetchShard(client, part, e);
    part.read(300_000, 100, out);
    const ref = new Int32Array(100);
    full.read(300_000, 100, ref);
    expect(out).toEqual(ref);
    expect(part.missing().length).toBeGreaterThan(10);

    // The server's copy is tampered with: the worker refuses it and writes nothing.
    const victim = part.missing()[0];
    const file = path.join(dataDir, victim.file);
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1] ^= 1;
    fs.writeFileSync(file, bad);
    try {
      await expect(fetchShard(client, part, victim)).rejects.toThrow(DataCorruptError);
      expect(fs.existsSync(path.join(mine, victim.file))).toBe(false);
    } finally {
      fs.writeFileSync(file, good);
    }
    // A name the manifest does not list is refused by the server.
    await expect(fetchShard(client, part, { ...victim, file: '../manifest.json' })).rejects.toMatchObject({ reason: 'no-such-shard' });
  } finally {
    await close();
  }
});

test("with shardsPerRound, a member's windows of a round lie in that many consecutive shards, fixed by seed, round and peer", () => {
  const loader = DataLoader.open(dataDir, { split: 'train' });
  const ranges = loader.shardRanges();
  for (const peer of ['p1', 'p2', 'p3']) {
    const region = assignedRegion(loader, 7, 4, peer, 2);
    const first = ranges.findIndex((r) => r.start === region.start);
    expect(first).toBeGreaterThanOrEqual(0);
    expect(region.length).toBe(ranges[first].tokens + ranges[first + 1].tokens);
    for (let s = 0; s < 5; s++) {
      const starts = assignedStarts(loader, 7, 4, peer, s, 4, 64, 2);
      for (const st of starts) expect(st >= region.start && st + 65 <= region.start + region.length).toBe(true);
      const batch = assignedBatch(loader, 7, 4, peer, s, 4, 64, 2);
      const row = new Int32Array(65);
      loader.read(starts[1], 65, row);
      expect(batch.subarray(65, 130)).toEqual(row);
    }
  }
  expect(assignedRegion(loader, 7, 4, 'p1', 0)).toEqual({ start: 0, length: loader.numTokens });
});

test('workers with empty data directories train in the swarm holding only the shards they need', async () => {
  const swarm = new LocalSwarm({
    dir: path.join(tmp, 'swarm'),
    dataDir,
    workerData: 'fetch',
    config: localRunConfig({ model: 'tiny', vocabSize: 257, innerSteps: 6, minMembers: 3, planDelayMs: 1000, shardsPerRound: 2 }),
    workerArgs: ['--eval-every', '2'],
  });
  try {
    await swarm.startCoordinator();
    for (let i = 0; i < 3; i++) swarm.startWorker();
    await swarm.waitFor('coordinator', (l) => l.event === 'state.commit' && (l.round as number) >= 3, 120_000);
    const listed = readManifest(dataDir).shards.length;
    for (const name of ['w1', 'w2', 'w3']) {
      // At most 2 train shards (+1 where a window runs over the region's end) per round, and the first val shard.
      const held = fs.readdirSync(swarm.workerDataDir(name)).filter((f) => f.endsWith('.bin'));
      const rounds = swarm.child(name).lines.filter((l) => l.event === 'round.start').length;
      expect(held.length).toBeGreaterThan(0);
      expect(held.length).toBeLessThanOrEqual(3 * rounds + 1);
      expect(held.length).toBeLessThan(listed);
      expect(swarm.child(name).lines.some((l) => l.event === 'data.shard')).toBe(true);
    }
  } finally {
    await swarm.stop(10_000);
  }
});

// Serving the run's data by the shard: the coordinator (with --data) answers GetManifest with its
// manifest.json and FetchShard with one listed shard in chunks; a worker whose data directory lacks what
// its windows need fetches exactly those shards, checks each against the manifest's SHA-256 before use,
// and keeps it (written atomically). No member has to hold the whole corpus.
import * as fs from 'fs';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import { DataCorruptError } from '../errors';
import type { SignedClient } from '../swarm/grpc-client';
import { CoordinatorMethods, ManifestResponse, ShardChunk, STATE_CHUNK_BYTES } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { writeFileAtomic } from '../train/atomic-write';
import { checkShard, DataLoader } from './loader';
import { Manifest, MANIFEST_FILE, manifestHash, parseManifest, ShardEntry } from './manifest';
import { SHARD_HEADER_BYTES } from './shard';

/** Server side over a prepared data directory. */
export class ShardServer {
  readonly dir: string;
  readonly #manifestText: string;
  readonly #files: Set<string>;

  constructor(dir: string, manifest: Manifest) {
    this.dir = dir;
    this.#manifestText = fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8');
    this.#files = new Set(manifest.shards.map((s) => s.file));
  }

  manifest(): ManifestResponse {
    return { json: this.#manifestText };
  }

  async *shard(file: string, signal?: AbortSignal): AsyncGenerator<ShardChunk> {
    // Only names the manifest lists: never a path of the caller's choosing.
    if (!this.#files.has(file)) throw new RpcError(grpc.status.NOT_FOUND, `no shard ${JSON.stringify(file)} in the run's manifest`, 'no-such-shard');
    // A worker's partial directory holds only what it fetched (each checked before it was kept).
    const bytes = await fs.promises.readFile(path.join(this.dir, file)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw new RpcError(grpc.status.NOT_FOUND, `shard ${file} is not held here (yet)`, 'shard-not-held');
      throw e;
    });
    for (let offset = 0; offset < bytes.length || offset === 0; offset += STATE_CHUNK_BYTES) {
      if (signal?.aborted) return;
      yield { totalBytes: bytes.length, offset, data: bytes.subarray(offset, offset + STATE_CHUNK_BYTES) };
      if (bytes.length === 0) return;
    }
  }
}

/** Parses a manifest text some source sent and checks it against the run's hash (when given). */
export function checkedManifest(json: string, source: string, expectHash?: string): Manifest {
  let m: Manifest;
  try {
    m = parseManifest(JSON.parse(json), `the manifest from ${source}`);
  } catch (e) {
    throw new DataCorruptError(`${source} sent a manifest that does not parse: ${(e as Error).message}`);
  }
  if (expectHash && manifestHash(m) !== expectHash) throw new DataCorruptError(`the manifest from ${source} hashes to ${manifestHash(m)}, not the run's ${expectHash}`);
  return m;
}

/** Writes a checked manifest text into `dir`. */
export async function keepManifest(dir: string, json: string): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true });
  await writeFileAtomic(path.join(dir, MANIFEST_FILE), Buffer.from(json));
}

/** Fetches the run's manifest into `dir` when it has none; refuses one whose hash is not `expectHash` (when given). */
export async function ensureManifest(client: SignedClient<CoordinatorMethods>, dir: string, expectHash?: string): Promise<Manifest> {
  const file = path.join(dir, MANIFEST_FILE);
  if (fs.existsSync(file)) return parseManifest(JSON.parse(fs.readFileSync(file, 'utf8')), file);
  const res = await client.call('getManifest', {});
  const m = checkedManifest(res.json, 'the coordinator', expectHash);
  await keepManifest(dir, res.json);
  return m;
}

/**
 * Takes one shard from a stream of chunks (the coordinator's or a data peer's), checks it against its
 * manifest entry before anything is kept, writes it into the loader's directory and installs it. A stream
 * that runs past the shard's size, skips, or ends early is refused as it happens.
 */
export async function receiveShard(chunks: AsyncIterable<ShardChunk>, loader: DataLoader, entry: ShardEntry, source: string): Promise<number> {
  const size = SHARD_HEADER_BYTES + 2 * entry.tokens;
  const parts: Buffer[] = [];
  let got = 0;
  let total = -1;
  for await (const c of chunks) {
    if (total < 0) total = c.totalBytes;
    if (total !== size) throw new DataCorruptError(`shard ${entry.file} from ${source}: ${total} bytes announced, the manifest's entry has ${size}`);
    if (c.offset !== got || c.totalBytes !== total || got + c.data.length > total) {
      throw new DataCorruptError(`shard ${entry.file} from ${source}: chunk at ${c.offset} (+${c.data.length}) does not continue ${got} of ${total} bytes`);
    }
    parts.push(c.data);
    got += c.data.length;
  }
  if (got !== total) throw new DataCorruptError(`shard ${entry.file} from ${source}: the stream ended after ${got} of ${total} bytes`);
  const bytes = Buffer.concat(parts);
  checkShard(bytes, entry, loader.manifest, `${entry.file} (from ${source})`); // before anything is kept
  await writeFileAtomic(path.join(loader.dir, entry.file), bytes);
  loader.install(entry.file, bytes);
  return bytes.length;
}

/** Fetches one shard from the coordinator (see receiveShard). */
export function fetchShard(client: SignedClient<CoordinatorMethods>, loader: DataLoader, entry: ShardEntry, signal?: AbortSignal): Promise<number> {
  return receiveShard(client.stream('fetchShard', { file: entry.file }, { signal }), loader, entry, 'the coordinator');
}

// Where a worker gets the shards its windows need: from members that serve data (DataPeer, `covenant worker
// --serve-data`), tried in an order fixed by SHA-256(file | peer id) so requests for one shard spread over the
// peers, then from the coordinator when it serves data. Every shard is checked against the manifest's
// SHA-256 before it is kept (receiveShard), so a peer that sends a wrong or tampered shard only costs a retry
// elsewhere. The manifest itself comes from the coordinator, or from a peer when the coordinator has no data
// (checked against the run's manifest hash that the coordinator gives). The committed global state, for a
// member that resyncs, comes the same way: from a peer whose payload has the SHA-256 that the coordinator names
// for its saved state, else from the coordinator.
import * as crypto from 'crypto';
import * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../errors';
import { Logger } from '../log';
import { SignedClient } from '../swarm/grpc-client';
import { Identity } from '../swarm/identity';
import { CoordinatorMethods, DataPeerInfo, DataPeerMethods, dataPeerService } from '../swarm/proto';
import { RpcError } from '../swarm/rpc-error';
import { DataLoader } from './loader';
import { Manifest, ShardEntry } from './manifest';
import { checkedManifest, fetchShard, keepManifest, receiveShard } from './shard-service';
import { GlobalState } from '../swarm/global-state';
import { fetchState } from '../swarm/state-stream';

/** How long a fetched list of data peers is used before it is asked for again. */
const PEERS_TTL_MS = 10_000;
/** Deadline of one shard download from a peer. */
const PEER_SHARD_DEADLINE_MS = 120_000;

export interface ShardSourcesOptions {
  coordinator: SignedClient<CoordinatorMethods>;
  identity: Identity;
  runId: string;
  logger: Logger;
  /** Called for every manifest, shard or state a data peer did not deliver or sent wrong. */
  onPeerFailure?: () => void;
}

export class ShardSources {
  readonly #o: ShardSourcesOptions;
  readonly #clients = new Map<string, SignedClient<DataPeerMethods>>();
  #peers: { at: number; manifestSha256: string; list: DataPeerInfo[]; stateRound: number; stateSha256: string } | undefined;
  /** The coordinator answered UNIMPLEMENTED: it serves no data. */
  #coordinatorHasNone = false;

  constructor(o: ShardSourcesOptions) {
    this.#o = o;
  }

  async #dataPeers(fresh = false) {
    if (!fresh && this.#peers && Date.now() - this.#peers.at < PEERS_TTL_MS) return this.#peers;
    try {
      const r = await this.#o.coordinator.call('dataPeers', {}, { deadlineMs: 5000 });
      this.#peers = { at: Date.now(), manifestSha256: r.manifestSha256, list: r.peers, stateRound: r.stateRound, stateSha256: r.stateSha256 };
    } catch (e) {
      // An older coordinator, or one that is away: no peers this time; the coordinator itself may still serve.
      this.#o.logger.debug('data.peers-failed', { error: errorMessage(e) });
      this.#peers = { at: Date.now(), manifestSha256: '', list: [], stateRound: 0, stateSha256: '' };
    }
    return this.#peers;
  }

  /**
   * The coordinator's saved global state (round ≥ minRound) from a data peer whose payload is, byte for byte,
   * the one the coordinator names; undefined when no peer has it (the caller then asks the coordinator).
   */
  async stateFromPeers(minRound: number, signal?: AbortSignal): Promise<{ state: GlobalState; from: string } | undefined> {
    const peers = await this.#dataPeers(true);
    if (!peers.stateSha256 || peers.stateRound < minRound) return undefined;
    for (const p of this.#ordered(peers.list, `state|${peers.stateRound}`)) {
      if (signal?.aborted) break;
      try {
        const state = await fetchState(this.#client(p.address), { minRound: peers.stateRound, expectSha256: peers.stateSha256, signal });
        return { state, from: p.peerId };
      } catch (e) {
        this.#o.logger.warn('state.peer-failed', { peer: p.peerId, address: p.address, round: peers.stateRound, error: errorMessage(e) });
        this.#o.onPeerFailure?.();
      }
    }
    return undefined;
  }

  #client(address: string): SignedClient<DataPeerMethods> {
    let c = this.#clients.get(address);
    if (!c) this.#clients.set(address, (c = new SignedClient(dataPeerService(), { address, identity: this.#o.identity, runId: this.#o.runId })));
    return c;
  }

  #ordered(list: DataPeerInfo[], key: string): DataPeerInfo[] {
    const k = (p: DataPeerInfo) => crypto.createHash('sha256').update(`${key}|${p.peerId}`).digest('hex');
    return [...list].sort((a, b) => (k(a) < k(b) ? -1 : 1));
  }

  /** The run's manifest from the first data peer whose copy hashes to the run's (the coordinator has none). */
  async manifestFromPeers(dir: string, signal?: AbortSignal): Promise<Manifest> {
    const peers = await this.#dataPeers();
    for (const p of this.#ordered(peers.list, 'manifest')) {
      if (signal?.aborted) break;
      try {
        const res = await this.#client(p.address).call('getManifest', {}, { deadlineMs: 10_000, signal });
        const m = checkedManifest(res.json, `data peer ${p.peerId.slice(0, 8)}`, peers.manifestSha256 || undefined);
        await keepManifest(dir, res.json);
        this.#o.logger.info('data.manifest', { dir, from: p.peerId });
        return m;
      } catch (e) {
        this.#o.logger.warn('data.peer-failed', { peer: p.peerId, address: p.address, file: 'manifest.json', error: errorMessage(e) });
        this.#o.onPeerFailure?.();
      }
    }
    throw new RpcError(grpc.status.UNAVAILABLE, 'neither the coordinator nor any data peer served the run\'s manifest', 'no-data-source');
  }

  /** Fetches one shard from a data peer, else the coordinator; returns its size and where it came from. */
  async fetch(loader: DataLoader, entry: ShardEntry, signal?: AbortSignal): Promise<{ bytes: number; from: string }> {
    const peers = await this.#dataPeers();
    for (const p of this.#ordered(peers.list, entry.file)) {
      if (signal?.aborted) break;
      try {
        const chunks = this.#client(p.address).stream('fetchShard', { file: entry.file }, { signal, deadlineMs: PEER_SHARD_DEADLINE_MS });
        return { bytes: await receiveShard(chunks, loader, entry, `data peer ${p.peerId.slice(0, 8)}`), from: p.peerId };
      } catch (e) {
        const notHeld = e instanceof RpcError && e.reason === 'shard-not-held';
        this.#o.logger[notHeld ? 'debug' : 'warn']('data.peer-failed', { peer: p.peerId, address: p.address, file: entry.file, error: errorMessage(e) });
        if (!notHeld) this.#o.onPeerFailure?.();
      }
    }
    if (this.#coordinatorHasNone) throw new RpcError(grpc.status.UNAVAILABLE, `no data peer holds ${entry.file} and the coordinator serves no data`, 'no-data-source');
    try {
      return { bytes: await fetchShard(this.#o.coordinator, loader, entry, signal), from: 'coordinator' };
    } catch (e) {
      if (e instanceof RpcError && e.status === grpc.status.UNIMPLEMENTED) {
        this.#coordinatorHasNone = true;
        throw new RpcError(grpc.status.UNAVAILABLE, `no data peer holds ${entry.file} and the coordinator serves no data`, 'no-data-source');
      }
      throw e;
    }
  }

  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}

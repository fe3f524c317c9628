// The coordinator's membership table: who is in the swarm, where its data plane listens, and when it last
// gave a sign of life. Pure logic with an injectable clock; the gRPC handlers (coordinator-service.ts) call
// it and a sweep (a timer, or a test) drops members whose heartbeats stopped. Events (join, leave, drop)
// go to one callback so the coordinator can log and count them.
import * as grpc from '@grpc/grpc-js';
import { invalidParameter } from '../train/model-config';
import { isPeerId, peerIdFromPublicKey } from './identity';
import { PUBLIC_KEY_BYTES, WorkerPhase } from './proto';
import { RpcError } from './rpc-error';

/** What a worker says about itself when it joins (JoinRequest, less the address). */
export interface MemberInfo {
  agent: string;
  device: string;
  /** Round of the state the worker holds (0: none). */
  stateRound: number;
  /** Sync hash of that state ('' : none). */
  thetaSha256: string;
  /** 'host:port' of its DataPeer service ('': it serves no data). */
  dataServer: string;
}

export interface Member {
  readonly peerId: string;
  /** Raw 32-byte ed25519 public key. */
  readonly publicKey: Buffer;
  /** 'host:port' of its data plane (all-reduce listener). */
  address: string;
  info: MemberInfo;
  /** First admission (kept across re-joins). */
  readonly joinedAtMs: number;
  /** Last join or heartbeat. */
  lastSeenMs: number;
  /** How many times this peer joined while already a member (restarts, retries). */
  rejoins: number;
  /** From the last heartbeat. */
  round: number;
  phase: WorkerPhase;
  innerStep: number;
}

export interface HeartbeatInfo {
  round?: number;
  phase?: WorkerPhase;
  innerStep?: number;
}

export type MembershipEvent =
  | { type: 'join'; member: Member; rejoin: boolean }
  | { type: 'leave'; member: Member; reason: string }
  | { type: 'drop'; member: Member; silentMs: number };

export interface MembershipOptions {
  /** A member whose last join or heartbeat is older than this is dropped by sweep(). */
  heartbeatTimeoutMs: number;
  /** Clock, ms since the epoch; default Date.now. */
  now?: () => number;
  /** Called synchronously for every join (new or re-join), leave and drop. */
  onEvent?: (event: MembershipEvent) => void;
}

/** Reason of the NOT_FOUND refusal for a peer the coordinator does not know: it must Join again. */
export const UNKNOWN_PEER_REASON = 'unknown-peer';

const PORT_RE = /^[0-9]{1,5}$/;

/** Checks a data-plane address 'host:port' ('[::1]:7000' for IPv6): an INVALID_ARGUMENT RpcError when it is not one. */
export function checkAddress(address: unknown): string {
  const bad = (why: string) => new RpcError(grpc.status.INVALID_ARGUMENT, `data address ${JSON.stringify(address)} is not host:port (${why})`, 'bad-address');
  if (typeof address !== 'string' || address.length === 0) throw bad('empty');
  if (address.length > 300) throw bad('too long');
  const i = address.lastIndexOf(':');
  if (i <= 0) throw bad('no port');
  let host = address.slice(0, i);
  const port = address.slice(i + 1);
  if (host.startsWith('[')) {
    if (!host.endsWith(']') || host.length < 3) throw bad('unbalanced brackets');
    host = host.slice(1, -1);
  } else if (host.includes(':')) {
    throw bad('an IPv6 host needs brackets');
  }
  if (!/^[A-Za-z0-9.\-:_%]+$/.test(host)) throw bad('bad host');
  if (!PORT_RE.test(port) || Number(port) < 1 || Number(port) > 65535) throw bad('port must be 1..65535');
  return address;
}

export class Membership {
  readonly heartbeatTimeoutMs: number;
  readonly #now: () => number;
  readonly #onEvent?: (event: MembershipEvent) => void;
  readonly #members = new Map<string, Member>();

  constructor(options: MembershipOptions) {
    const t = options.heartbeatTimeoutMs;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) throw new RangeError(invalidParameter('heartbeatTimeoutMs', 'a positive number of milliseconds', t));
    if (options.now !== undefined && typeof options.now !== 'function') throw new TypeError(invalidParameter('now', 'a function', options.now));
    this.heartbeatTimeoutMs = t;
    this.#now = options.now ?? Date.now;
    this.#onEvent = options.onEvent;
  }

  get size(): number {
    return this.#members.size;
  }

  has(peerId: string): boolean {
    return this.#members.has(peerId);
  }

  get(peerId: string): Member | undefined {
    return this.#members.get(peerId);
  }

  /** Members sorted by peer id (deterministic, independent of join order). */
  list(): Member[] {
    return [...this.#members.values()].sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  }

  /**
   * Admits a peer, or refreshes it when it is already a member (the same record: joinedAtMs kept, address,
   * info and last-seen time updated). The peer id must be the one `publicKey` gives.
   */
  join(peerId: string, publicKey: Uint8Array, address: string, info: Partial<MemberInfo> = {}): Member {
    if (!isPeerId(peerId)) throw new RpcError(grpc.status.INVALID_ARGUMENT, `peer id ${JSON.stringify(peerId)} is not 40 lowercase hex digits`, 'bad-peer-id');
    if (!(publicKey instanceof Uint8Array) || publicKey.byteLength !== PUBLIC_KEY_BYTES || peerIdFromPublicKey(publicKey) !== peerId) {
      throw new RpcError(grpc.status.UNAUTHENTICATED, `peer id ${peerId} does not derive from the given public key`, 'peer-id-mismatch');
    }
    checkAddress(address);
    const now = this.#now();
    const full: MemberInfo = {
      agent: info.agent ?? '',
      device: info.device ?? '',
      stateRound: info.stateRound ?? 0,
      thetaSha256: info.thetaSha256 ?? '',
      dataServer: info.dataServer ?? '',
    };
    if (full.dataServer) checkAddress(full.dataServer);
    const existing = this.#members.get(peerId);
    if (existing) {
      existing.address = address;
      existing.info = full;
      existing.lastSeenMs = now;
      existing.rejoins++;
      this.#onEvent?.({ type: 'join', member: existing, rejoin: true });
      return existing;
    }
    const member: Member = {
      peerId,
      publicKey: Buffer.from(publicKey),
      address,
      info: full,
      joinedAtMs: now,
      lastSeenMs: now,
      rejoins: 0,
      round: 0,
      phase: 'WORKER_PHASE_UNSPECIFIED',
      innerStep: 0,
    };
    this.#members.set(peerId, member);
    this.#onEvent?.({ type: 'join', member, rejoin: false });
    return member;
  }

  /** Records a sign of life. An unknown peer (never joined, left, dropped, or the coordinator restarted) gets NOT_FOUND: it must Join. */
  heartbeat(peerId: string, hb: HeartbeatInfo = {}): Member {
    const member = this.#members.get(peerId);
    if (!member) {
      throw new RpcError(grpc.status.NOT_FOUND, `peer ${peerId} is not a member (never joined, left, or dropped for missed heartbeats); Join again`, UNKNOWN_PEER_REASON);
    }
    member.lastSeenMs = this.#now();
    if (hb.round !== undefined) member.round = hb.round;
    if (hb.phase !== undefined) member.phase = hb.phase;
    if (hb.innerStep !== undefined) member.innerStep = hb.innerStep;
    return member;
  }

  /** Removes a member that leaves gracefully; returns it, or undefined when it was not a member (leaving twice is harmless). */
  leave(peerId: string, reason = ''): Member | undefined {
    const member = this.#members.get(peerId);
    if (!member) return undefined;
    this.#members.delete(peerId);
    this.#onEvent?.({ type: 'leave', member, reason });
    return member;
  }

  /** Drops every member whose last join or heartbeat is more than heartbeatTimeoutMs before `now`; returns them, sorted by peer id. */
  sweep(now = this.#now()): Member[] {
    const dropped: Member[] = [];
    for (const member of this.list()) {
      const silentMs = now - member.lastSeenMs;
      if (silentMs > this.heartbeatTimeoutMs) {
        this.#members.delete(member.peerId);
        dropped.push(member);
        this.#onEvent?.({ type: 'drop', member, silentMs });
      }
    }
    return dropped;
  }
}

// The control plane's wire definitions: loads proto/coordinator.proto (which imports proto/covenant.proto)
// once with @grpc/proto-loader, and exports the TypeScript shapes of its messages, the method table that
// the typed server and client use, the protocol version, the size limits and the deadline helper.
//
// Loader options, fixed for every process (the signed canonical form depends on them, see signed-request.ts):
//   keepCase: false  — fields are lowerCamelCase in TypeScript (run_id → runId), the proto3 JSON names;
//   longs: Number    — int64/uint64 are JS numbers; the protocol keeps them below 2^53 (ms, rounds, counts);
//   enums: String    — enum values are their names ('COMPRESSION_INT8');
//   bytes: Buffer;   defaults: true — a received message has every field (unset message fields are null);
//   oneofs: false    — the protocol has no oneof.
import * as fs from 'fs';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { CovenantError } from '../errors';
import { invalidParameter } from '../train/model-config';

/** Bumped on any incompatible change of the messages or the signing rules; servers refuse other versions. */
export const PROTOCOL_VERSION = 1;
/** Protobuf package of every covenant service. */
export const PROTO_PACKAGE = 'covenant.v1';
/** Where the .proto files live (the repository's proto/, from dist/src/swarm/). */
export const PROTO_DIR = path.resolve(__dirname, '..', '..', '..', 'proto');

/** Largest message (request or response, each message of a stream too) a server or client accepts or sends. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Payload bytes per StateChunk of FetchState: well under MAX_MESSAGE_BYTES with the header. */
export const STATE_CHUNK_BYTES = 1024 * 1024;
/** Deadline of a unary call when the caller names none. */
export const DEFAULT_DEADLINE_MS = 10_000;
/** Deadline of a streaming call (FetchState) when the caller names none. */
export const DEFAULT_STREAM_DEADLINE_MS = 10 * 60_000;
/** Longest deadline a call may ask for (a FetchState of a large model); node's timers stop at 2^31 − 1 ms. */
export const MAX_DEADLINE_MS = 2 ** 31 - 1;

/** Sizes of the signing material in RequestMeta. */
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const NONCE_BYTES = 16;

/** The absolute time `ms` from now, for a call's `deadline` option. Every client call sets one. */
export function deadline(ms: number): Date {
  if (typeof ms !== 'number') throw new TypeError(invalidParameter('deadline ms', 'a positive number of milliseconds', ms));
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_DEADLINE_MS) {
    throw new RangeError(invalidParameter('deadline ms', `a number of milliseconds in (0, ${MAX_DEADLINE_MS}]`, ms));
  }
  return new Date(Date.now() + ms);
}

// ---------------------------------------------------------------------------------------------------------
// Messages, as a receiver sees them (defaults: true). covenant.proto

export interface RequestMeta {
  runId: string;
  protocolVersion: number;
  peerId: string;
  publicKey: Buffer;
  timestampMs: number;
  nonce: Buffer;
  signature: Buffer;
}

export type Compression = 'COMPRESSION_UNSPECIFIED' | 'COMPRESSION_FP32' | 'COMPRESSION_INT8';

export interface CollectiveId {
  round: number;
  attempt: number;
}

export interface RingMember {
  peerId: string;
  address: string;
  rank: number;
}

export interface FetchStateRequest {
  meta: RequestMeta | null;
  minRound: number;
  offset: number;
  expectSha256: string;
}

export interface StateHeader {
  round: number;
  format: string;
  totalBytes: number;
  sha256: string;
  thetaSha256: string;
  chunkBytes: number;
}

export interface StateChunk {
  header: StateHeader | null;
  offset: number;
  data: Buffer;
}

// coordinator.proto

export interface JoinRequest {
  meta: RequestMeta | null;
  dataAddress: string;
  agent: string;
  manifestSha256: string;
  stateRound: number;
  thetaSha256: string;
  device: string;
  dataServer: string;
}

export interface JoinResponse {
  peerId: string;
  round: number;
  committedRound: number;
  thetaSha256: string;
  needsState: boolean;
  heartbeatIntervalMs: number;
  runConfigJson: string;
}

export type WorkerPhase =
  | 'WORKER_PHASE_UNSPECIFIED'
  | 'WORKER_PHASE_IDLE'
  | 'WORKER_PHASE_SYNCING'
  | 'WORKER_PHASE_INNER'
  | 'WORKER_PHASE_ALLREDUCE'
  | 'WORKER_PHASE_OUTER';

export interface HeartbeatRequest {
  meta: RequestMeta | null;
  round: number;
  phase: WorkerPhase;
  innerStep: number;
}

export type HeartbeatAction =
  | 'HEARTBEAT_ACTION_UNSPECIFIED'
  | 'HEARTBEAT_ACTION_CONTINUE'
  | 'HEARTBEAT_ACTION_REPLAN'
  | 'HEARTBEAT_ACTION_RESYNC'
  | 'HEARTBEAT_ACTION_REJOIN'
  | 'HEARTBEAT_ACTION_UPLOAD';

export interface HeartbeatResponse {
  action: HeartbeatAction;
  round: number;
  planAttempt: number;
  serverTimeMs: number;
  uploadRound: number;
  checksWaiting: number;
}

export interface LeaveRequest {
  meta: RequestMeta | null;
  reason: string;
}

export type LeaveResponse = Record<string, never>;

export interface GetPlanRequest {
  meta: RequestMeta | null;
  round: number;
  x25519PublicKey: Buffer;
}

export interface SealedSecretMessage {
  ephemeralPublicKey: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
}

export type PlanStatus = 'PLAN_STATUS_UNSPECIFIED' | 'PLAN_STATUS_READY' | 'PLAN_STATUS_PENDING' | 'PLAN_STATUS_NOT_MEMBER';

export interface RoundPlan {
  status: PlanStatus;
  retryAfterMs: number;
  id: CollectiveId | null;
  ring: RingMember[];
  rank: number;
  allreduceSecret: Buffer;
  sealedSecret: SealedSecretMessage | null;
  deadlineMs: number;
  thetaSha256: string;
  innerSteps: number;
  compression: Compression;
  blockSize: number;
  allreduceTimeoutMs: number;
}

export type RoundOutcome =
  | 'ROUND_OUTCOME_UNSPECIFIED'
  | 'ROUND_OUTCOME_COMPLETED'
  | 'ROUND_OUTCOME_ALLREDUCE_FAILED'
  | 'ROUND_OUTCOME_ABANDONED';

export interface RoundTimings {
  innerSeconds: number;
  allreduceSeconds: number;
  outerSeconds: number;
  totalSeconds: number;
}

export interface AllReduceFailure {
  code: string;
  phase: string;
  peerRank: number;
  message: string;
}

export interface ReportRoundRequest {
  meta: RequestMeta | null;
  id: CollectiveId | null;
  outcome: RoundOutcome;
  thetaSha256: string;
  meanLoss: number;
  tokens: number;
  timings: RoundTimings | null;
  bytesSent: number;
  bytesReceived: number;
  failure: AllReduceFailure | null;
  transcriptSentSha256: string;
  transcriptReceivedSha256: string;
}

export type RoundVerdict =
  | 'ROUND_VERDICT_UNSPECIFIED'
  | 'ROUND_VERDICT_ACCEPTED'
  | 'ROUND_VERDICT_COMMITTED'
  | 'ROUND_VERDICT_REPLAN'
  | 'ROUND_VERDICT_RESYNC';

export interface ReportRoundResponse {
  verdict: RoundVerdict;
  committedRound: number;
  uploadUpdate: boolean;
  uploadDelta: boolean;
  openBlocks: number[];
}

export interface BlockOpening {
  index: number;
  block: Buffer;
  path: Buffer[];
}

export interface RingOpening {
  step: number;
  index: number;
  block: Buffer;
  path: Buffer[];
}

export interface PushOpeningsRequest {
  meta: RequestMeta | null;
  id: CollectiveId | null;
  openings: BlockOpening[];
  ringOpenings: RingOpening[];
}

export interface PushScalesRequest {
  meta: RequestMeta | null;
  id: CollectiveId | null;
  scales: Buffer;
  offset: number;
}

/** Block scales per PushScales chunk: 2 MiB of fp32, well under MAX_MESSAGE_BYTES. */
export const SCALES_CHUNK_BLOCKS = 512 * 1024;

export interface PushScalesResponse {
  accepted: boolean;
}

export interface PushOpeningsResponse {
  accepted: boolean;
}

export interface CommitRequest {
  meta: RequestMeta | null;
  id: CollectiveId | null;
  merkleRoot: string;
  deltaNorm: number;
  tokens: number;
  meanLoss: number;
  numBlocks: number;
  scalesSha256: string;
  scaleNorm: number;
}

export type CommitStatus = 'COMMIT_STATUS_UNSPECIFIED' | 'COMMIT_STATUS_WAIT' | 'COMMIT_STATUS_GO' | 'COMMIT_STATUS_REPLAN' | 'COMMIT_STATUS_REFUSED';

export interface CommitResponse {
  status: CommitStatus;
  retryAfterMs: number;
  missingRanks: number[];
  reason: string;
  clipNorm: number;
}

export interface PushUpdateRequest {
  meta: RequestMeta | null;
  id: CollectiveId | null;
  offset: number;
  totalBytes: number;
  sha256: string;
  data: Buffer;
}

export interface GetManifestRequest {
  meta: RequestMeta | null;
}

export interface ManifestResponse {
  json: string;
}

export interface FetchShardRequest {
  meta: RequestMeta | null;
  file: string;
}

export interface ShardChunk {
  totalBytes: number;
  offset: number;
  data: Buffer;
}

export interface FetchCheckRequest {
  meta: RequestMeta | null;
}

export interface CheckTask {
  round: number;
  peerId: string;
  prevThetaSha256: string;
  deltaSha256: string;
  totalBytes: number;
  batches: number;
}

export interface CheckChunk {
  task: CheckTask | null;
  offset: number;
  data: Buffer;
}

export interface SubmitCheckRequest {
  meta: RequestMeta | null;
  round: number;
  peerId: string;
  deltaSha256: string;
  prevThetaSha256: string;
  declined: boolean;
  reason: string;
  assignedBefore: number[];
  assignedAfter: number[];
  controlBefore: number[];
  controlAfter: number[];
}

export interface SubmitCheckResponse {
  accepted: boolean;
}

export interface DataPeersRequest {
  meta: RequestMeta | null;
}

export interface DataPeerInfo {
  peerId: string;
  address: string;
}

export interface DataPeersResponse {
  manifestSha256: string;
  peers: DataPeerInfo[];
  stateRound: number;
  stateSha256: string;
}

export interface StreamLedgerRequest {
  meta: RequestMeta | null;
  fromIndex: number;
}

export interface LedgerEntryMessage {
  index: number;
  json: string;
}

export interface PushUpdateResponse {
  receivedBytes: number;
  applied: boolean;
  stateRound: number;
}

/**
 * What a sender may write: any field may be left out (it is sent as its default), nested messages
 * likewise, bytes as any Uint8Array.
 */
export type MessageInit<T> = {
  [K in keyof T]?: NonNullable<T[K]> extends Buffer
    ? Uint8Array
    : NonNullable<T[K]> extends ReadonlyArray<infer U>
      ? ReadonlyArray<U extends object ? MessageInit<U> : U>
      : NonNullable<T[K]> extends object
        ? MessageInit<NonNullable<T[K]>> | null
        : T[K];
};

/** A request without its meta: what the caller writes; the client adds the signed meta. */
export type RequestBody<Req> = MessageInit<Omit<Req, 'meta'>>;

// ---------------------------------------------------------------------------------------------------------
// Method tables: the typed server and client are generic over these.

/** A method: request and response message types and whether the response is a stream. */
export interface MethodSpec<Req, Res, Stream extends boolean> {
  request: Req;
  response: Res;
  responseStream: Stream;
}
export type UnaryMethod<Req, Res> = MethodSpec<Req, Res, false>;
export type ServerStreamMethod<Req, Res> = MethodSpec<Req, Res, true>;
export type AnyMethod = MethodSpec<unknown, unknown, boolean>;
export type MethodTable = Record<string, AnyMethod>;

/**
 * The Coordinator service (proto/coordinator.proto), keyed by lowerCamelCase method name. (Method tables are
 * `type`s, not interfaces: an interface has no index signature and would not be a MethodTable.)
 */
export type CoordinatorMethods = {
  join: UnaryMethod<JoinRequest, JoinResponse>;
  heartbeat: UnaryMethod<HeartbeatRequest, HeartbeatResponse>;
  leave: UnaryMethod<LeaveRequest, LeaveResponse>;
  getPlan: UnaryMethod<GetPlanRequest, RoundPlan>;
  reportRound: UnaryMethod<ReportRoundRequest, ReportRoundResponse>;
  fetchState: ServerStreamMethod<FetchStateRequest, StateChunk>;
  pushUpdate: UnaryMethod<PushUpdateRequest, PushUpdateResponse>;
  streamLedger: ServerStreamMethod<StreamLedgerRequest, LedgerEntryMessage>;
  commit: UnaryMethod<CommitRequest, CommitResponse>;
  getManifest: UnaryMethod<GetManifestRequest, ManifestResponse>;
  fetchShard: ServerStreamMethod<FetchShardRequest, ShardChunk>;
  pushDelta: UnaryMethod<PushUpdateRequest, PushUpdateResponse>;
  pushOpenings: UnaryMethod<PushOpeningsRequest, PushOpeningsResponse>;
  pushScales: UnaryMethod<PushScalesRequest, PushScalesResponse>;
  fetchCheck: ServerStreamMethod<FetchCheckRequest, CheckChunk>;
  submitCheck: UnaryMethod<SubmitCheckRequest, SubmitCheckResponse>;
  dataPeers: UnaryMethod<DataPeersRequest, DataPeersResponse>;
};

/** The DataPeer service a worker runs with --serve-data. */
export type DataPeerMethods = {
  getManifest: UnaryMethod<GetManifestRequest, ManifestResponse>;
  fetchShard: ServerStreamMethod<FetchShardRequest, ShardChunk>;
  fetchState: ServerStreamMethod<FetchStateRequest, StateChunk>;
};

/** A loaded service: grpc-js's definition plus its methods by lowerCamelCase name. */
export interface LoadedService<M extends MethodTable> {
  /** Full name, e.g. 'covenant.v1.Coordinator'. */
  name: string;
  definition: grpc.ServiceDefinition;
  /** grpc-js method definitions (path, serializers, stream flags) keyed like M. */
  methods: { [K in keyof M & string]: grpc.MethodDefinition<M[K]['request'], M[K]['response']> };
}

// ---------------------------------------------------------------------------------------------------------
// Loading (once per process)

export const LOADER_OPTIONS: Readonly<protoLoader.Options> = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: false,
  includeDirs: [PROTO_DIR],
});

/** The .proto files that hold a service, relative to PROTO_DIR. */
const SERVICE_FILES: Readonly<Record<string, string>> = { Coordinator: 'coordinator.proto', DataPeer: 'coordinator.proto' };

let packageDefinition: protoLoader.PackageDefinition | undefined;

function load(): protoLoader.PackageDefinition {
  if (packageDefinition) return packageDefinition;
  const files = [...new Set(Object.values(SERVICE_FILES))];
  for (const f of [...files, 'covenant.proto']) {
    const file = path.join(PROTO_DIR, f);
    if (!fs.existsSync(file)) {
      throw new CovenantError('PROTO_MISSING', `protocol definition ${file} is missing; reinstall covenant (the package ships proto/)`);
    }
  }
  packageDefinition = protoLoader.loadSync(files, LOADER_OPTIONS);
  return packageDefinition;
}

function isServiceDefinition(x: unknown): x is grpc.ServiceDefinition {
  if (typeof x !== 'object' || x === null) return false;
  return Object.values(x).every((m) => typeof m === 'object' && m !== null && typeof (m as { path?: unknown }).path === 'string');
}

const services = new Map<string, LoadedService<MethodTable>>();

/** Loads (once) and returns a service of package covenant.v1 by its short name, e.g. 'Coordinator'. */
export function loadService<M extends MethodTable>(shortName: string): LoadedService<M> {
  const cached = services.get(shortName);
  if (cached) return cached as unknown as LoadedService<M>;
  const name = `${PROTO_PACKAGE}.${shortName}`;
  const definition = load()[name];
  if (!isServiceDefinition(definition)) throw new CovenantError('PROTO_MISSING', `no service ${name} in ${PROTO_DIR}`);
  const methods: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const def of Object.values(definition)) {
    // proto-loader sets originalName to the lowerCamelCase form of the rpc name (Join → join).
    const key = (def as { originalName?: string }).originalName ?? def.path.slice(def.path.lastIndexOf('/') + 1);
    methods[key] = def;
  }
  const loaded = { name, definition, methods } as LoadedService<MethodTable>;
  services.set(shortName, loaded);
  return loaded as unknown as LoadedService<M>;
}

/** The Coordinator service. */
export function coordinatorService(): LoadedService<CoordinatorMethods> {
  return loadService<CoordinatorMethods>('Coordinator');
}

/** The DataPeer service (a worker's shard server). */
export function dataPeerService(): LoadedService<DataPeerMethods> {
  return loadService<DataPeerMethods>('DataPeer');
}

/** Channel and server options that bound every message to MAX_MESSAGE_BYTES unless told otherwise. */
export function messageLimitOptions(limits: { maxReceiveBytes?: number; maxSendBytes?: number } = {}): grpc.ChannelOptions {
  return {
    'grpc.max_receive_message_length': limits.maxReceiveBytes ?? MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': limits.maxSendBytes ?? MAX_MESSAGE_BYTES,
  };
}

// One ledger entry: an event of the run (genesis, join, leave, drop, commit), hash-chained to the entry
// before it and signed by the coordinator. hash = SHA-256 of LEDGER_PREFIX + canonicalJson({ body, index,
// prevHash, timeMs, type }); signature = ed25519 over the 32 bytes of that hash. Members' own signed
// requests (their round reports) are kept inside commit entries as SignedRecords, so anyone can check them
// against the members' keys without trusting the coordinator.
import * as crypto from 'crypto';
import { Identity, peerIdFromPublicKey, verifySignature } from '../swarm/identity';
import { canonicalJson, canonicalRequestBytes, requestBody, SIGNING_PREFIX } from '../swarm/signed-request';
import type { RequestMeta } from '../swarm/proto';

export const LEDGER_PREFIX = 'covenant-ledger-entry/v1\n';
export const GENESIS_PREV_HASH = '0'.repeat(64);
export const ENTRY_TYPES = ['genesis', 'join', 'leave', 'drop', 'commit', 'abandon'] as const;
export type EntryType = (typeof ENTRY_TYPES)[number];

export interface LedgerEntry {
  index: number;
  prevHash: string;
  timeMs: number;
  type: EntryType;
  body: Record<string, unknown>;
  /** SHA-256 hex of the entry's canonical content. */
  hash: string;
  /** Base64 ed25519 signature of the coordinator over the hash's bytes. */
  signature: string;
}

export interface GenesisBody {
  runId: string;
  coordinatorPeerId: string;
  /** Base64 raw ed25519 public key: the key every later entry is signed with. */
  coordinatorPublicKey: string;
  runConfigSha256: string;
  /** The committed state the ledger starts from. */
  round: number;
  thetaSha256: string;
}

/** A member's signed request, verbatim: the canonical JSON it signed (after SIGNING_PREFIX) and its signature. */
export interface SignedRecord {
  method: string;
  signed: string;
  /** Base64. */
  signature: string;
}

export interface MemberOutcome {
  peerId: string;
  /**
   * 'verified': checks passed; 'failed': a check failed (reason says which); 'resync': its θ hash disagreed;
   * 'unverified': the coordinator stopped before it checked the round (no credit, no penalty).
   */
  verdict: 'verified' | 'failed' | 'resync' | 'unverified';
  reason?: string;
  /** Tokens the member reported for the round. */
  tokens: number;
  /** Quality score in [0, 1] from the useful-work check (1 when not sampled and nothing failed). */
  score: number;
  /** Credits earned: verified tokens × score. */
  credits: number;
  /** SHA-256 over the member's data windows of the round (src/diloco/assignment.ts assignmentDigest). */
  assignmentDigest: string;
  /** The member's signed ReportRound, when it sent one. */
  report?: SignedRecord;
  /** The member's signed Commit (Merkle root, norm, tokens) of the attempt that ran. */
  commitment?: SignedRecord;
  /**
   * The useful-work check's loss drops, when the member was sampled; with the validator member that measured
   * them and its signed SubmitCheck (per-batch losses), when the check was delegated.
   */
  usefulWork?: { gainAssigned: number; gainControl: number; checkedBy?: string; check?: SignedRecord };
}

export interface CommitBody {
  round: number;
  attempt: number;
  prevThetaSha256: string;
  thetaSha256: string;
  ring: string[];
  members: MemberOutcome[];
}

function contentHash(e: Omit<LedgerEntry, 'hash' | 'signature'>): string {
  const content = canonicalJson({ body: e.body, index: e.index, prevHash: e.prevHash, timeMs: e.timeMs, type: e.type });
  return crypto.createHash('sha256').update(LEDGER_PREFIX + content, 'utf8').digest('hex');
}

/** The next entry after `prev` (undefined: the genesis entry), hashed and signed by `key`. */
export function makeEntry(key: Identity, prev: LedgerEntry | undefined, type: EntryType, body: Record<string, unknown>, timeMs = Date.now()): LedgerEntry {
  // Round-trip through JSON so the body is exactly what a reader of the file will see.
  const plain = JSON.parse(JSON.stringify(body)) as Record<string, unknown>;
  const draft = { index: prev ? prev.index + 1 : 0, prevHash: prev ? prev.hash : GENESIS_PREV_HASH, timeMs, type, body: plain };
  const hash = contentHash(draft);
  return { ...draft, hash, signature: key.sign(Buffer.from(hash, 'hex')).toString('base64') };
}

/** Why `e` is not well-formed on its own (hash and signature against `publicKey`), or undefined. */
export function entryProblem(e: LedgerEntry, publicKey: Buffer): string | undefined {
  if (!ENTRY_TYPES.includes(e.type)) return `unknown entry type ${JSON.stringify(e.type)}`;
  if (typeof e.body !== 'object' || e.body === null || Array.isArray(e.body)) return 'body is not an object';
  if (!Number.isSafeInteger(e.timeMs)) return 'timeMs is not an integer';
  const hash = contentHash(e);
  if (hash !== e.hash) return `hash mismatch: the content hashes to ${hash}, the entry records ${e.hash}`;
  if (typeof e.signature !== 'string' || !verifySignature(publicKey, Buffer.from(e.hash, 'hex'), Buffer.from(e.signature, 'base64'))) {
    return "the coordinator's signature does not verify";
  }
  return undefined;
}

/** A verified request as kept in the ledger. */
export function signedRecord(method: string, request: { meta: RequestMeta | null }): SignedRecord {
  const meta = request.meta;
  if (!meta) throw new TypeError('signedRecord needs a request with its meta');
  const bytes = canonicalRequestBytes(method, meta, requestBody(request));
  return { method, signed: bytes.subarray(Buffer.byteLength(SIGNING_PREFIX)).toString('utf8'), signature: meta.signature.toString('base64') };
}

/** The content of a signed record when its signature is the named peer's; a reason string otherwise. */
export function openSignedRecord(r: SignedRecord, peerId: string): { body: Record<string, unknown> } | string {
  let content: { body?: Record<string, unknown>; method?: string; peerId?: string; publicKey?: string };
  try {
    content = JSON.parse(r.signed);
  } catch {
    return 'the signed report is not JSON';
  }
  if (content.method !== r.method) return `the signed report is for method ${content.method}, not ${r.method}`;
  if (content.peerId !== peerId) return `the signed report is from ${content.peerId}, not ${peerId}`;
  const key = Buffer.from(content.publicKey ?? '', 'base64');
  if (key.length !== 32 || peerIdFromPublicKey(key) !== peerId) return "the signed report's key is not the peer's";
  const ok = verifySignature(key, Buffer.from(SIGNING_PREFIX + r.signed, 'utf8'), Buffer.from(r.signature, 'base64'));
  if (!ok) return "the member's signature on its report does not verify";
  return { body: content.body ?? {} };
}

// The round's all-reduce secret travels sealed to the member that asked for it, so that nobody on the path
// between a worker and the coordinator (plain gRPC, no TLS) learns it. The worker puts a fresh X25519
// public key into its signed GetPlan request; the coordinator answers with an ephemeral X25519 key of its
// own and the secret under AES-256-GCM, keyed by HKDF-SHA256 over the shared point and bound (as
// associated data) to the run, the collective id and the peer. A tampered sealed secret fails to open.
import * as crypto from 'crypto';
import { CovenantError } from '../errors';

export const X25519_KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const INFO = 'covenant/allreduce-secret/v1';

export interface SealedSecret {
  ephemeralPublicKey: Buffer;
  nonce: Buffer;
  /** The secret's ciphertext followed by the 16-byte GCM tag. */
  ciphertext: Buffer;
}

export class SealedSecretError extends CovenantError {
  constructor(message: string) {
    super('SEALED_SECRET', message);
  }
}

export interface SealingKeyPair {
  /** Raw 32-byte X25519 public key: what goes into GetPlanRequest.x25519_public_key. */
  publicKey: Buffer;
  privateKey: crypto.KeyObject;
}

export function newSealingKey(): SealingKeyPair {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('x25519');
  return { publicKey: rawPublicKey(publicKey), privateKey };
}

function rawPublicKey(key: crypto.KeyObject): Buffer {
  const x = key.export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new SealedSecretError('cannot export an X25519 public key');
  return Buffer.from(x, 'base64url');
}

function importPublicKey(raw: Uint8Array, what: string): crypto.KeyObject {
  if (raw.length !== X25519_KEY_BYTES) throw new SealedSecretError(`${what} is ${raw.length} bytes, expected a ${X25519_KEY_BYTES}-byte X25519 public key`);
  try {
    return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
  } catch (e) {
    throw new SealedSecretError(`${what} is not a valid X25519 public key: ${(e as Error).message}`);
  }
}

function aeadKey(shared: Buffer, ephemeral: Buffer, recipient: Buffer, context: string): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', shared, Buffer.concat([ephemeral, recipient]), `${INFO}|${context}`, 32));
}

/** Seals `secret` to the holder of `recipientPublicKey`; `context` (run, collective id, peer) must match at opening. */
export function sealSecret(secret: Uint8Array, recipientPublicKey: Uint8Array, context: string): SealedSecret {
  const recipient = importPublicKey(recipientPublicKey, 'the recipient key');
  const eph = crypto.generateKeyPairSync('x25519');
  const ephemeralPublicKey = rawPublicKey(eph.publicKey);
  const shared = crypto.diffieHellman({ privateKey: eph.privateKey, publicKey: recipient });
  const key = aeadKey(shared, ephemeralPublicKey, Buffer.from(recipientPublicKey), context);
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
  return { ephemeralPublicKey, nonce, ciphertext };
}

/** Opens a sealed secret with the recipient's key pair; SealedSecretError when it was altered, is malformed or was sealed for another context. */
export function openSecret(sealed: SealedSecret, recipient: SealingKeyPair, context: string): Buffer {
  const eph = importPublicKey(sealed.ephemeralPublicKey, 'the sealed secret\'s ephemeral key');
  if (sealed.nonce.length !== NONCE_BYTES) throw new SealedSecretError(`the sealed secret's nonce is ${sealed.nonce.length} bytes, expected ${NONCE_BYTES}`);
  if (sealed.ciphertext.length <= TAG_BYTES) throw new SealedSecretError(`the sealed secret is ${sealed.ciphertext.length} bytes, too short to hold a secret and its tag`);
  const shared = crypto.diffieHellman({ privateKey: recipient.privateKey, publicKey: eph });
  const key = aeadKey(shared, Buffer.from(sealed.ephemeralPublicKey), recipient.publicKey, context);
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, sealed.nonce);
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(sealed.ciphertext.subarray(sealed.ciphertext.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new SealedSecretError('the sealed all-reduce secret does not open: altered in transit, or sealed for another key or collective');
  }
}

/** What a sealed secret is bound to. */
export function secretContext(runId: string, round: number, attempt: number, peerId: string): string {
  return `${runId}|${round}|${attempt}|${peerId}`;
}

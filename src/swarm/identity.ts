// A peer's identity: an ed25519 key pair kept in the state directory as identity.key (PKCS#8 PEM, mode
// 0600), created on first start and reused after restarts, so a restarted worker is the same peer. The peer
// id is derived from the public key: hex of the first 20 bytes of SHA-256(raw 32-byte public key).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, sign, verify } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CovenantError, hasCode } from '../errors';
import { writeFileAtomicSync } from '../train/atomic-write';
import { invalidParameter } from '../train/model-config';
import { PUBLIC_KEY_BYTES, SIGNATURE_BYTES } from './proto';

/** File name of the key inside the state directory. */
export const IDENTITY_FILE = 'identity.key';
/** Bytes of SHA-256(public key) that make the peer id (hex: twice as many characters). */
export const PEER_ID_BYTES = 20;
const PEER_ID_RE = new RegExp(`^[0-9a-f]{${2 * PEER_ID_BYTES}}$`);

/** The key file is readable or writable by group or others (`chmod 600` fixes it). */
export class IdentityInsecureError extends CovenantError {
  constructor(message: string) {
    super('IDENTITY_INSECURE', message);
  }
}

/** The key file is not an ed25519 private key in PKCS#8 PEM. */
export class IdentityCorruptError extends CovenantError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('IDENTITY_CORRUPT', message, options);
  }
}

/** The peer id of a raw 32-byte ed25519 public key. */
export function peerIdFromPublicKey(publicKey: Uint8Array): string {
  if (!(publicKey instanceof Uint8Array)) throw new TypeError(invalidParameter('publicKey', 'a Uint8Array', publicKey));
  if (publicKey.byteLength !== PUBLIC_KEY_BYTES) {
    throw new RangeError(invalidParameter('publicKey', `${PUBLIC_KEY_BYTES} bytes`, `${publicKey.byteLength} bytes`));
  }
  return createHash('sha256').update(publicKey).digest().subarray(0, PEER_ID_BYTES).toString('hex');
}

/** True for a well-formed peer id (40 lowercase hex characters). */
export function isPeerId(s: unknown): s is string {
  return typeof s === 'string' && PEER_ID_RE.test(s);
}

/** A KeyObject for a raw 32-byte ed25519 public key. */
export function publicKeyFromRaw(publicKey: Uint8Array): KeyObject {
  if (publicKey.byteLength !== PUBLIC_KEY_BYTES) {
    throw new RangeError(invalidParameter('publicKey', `${PUBLIC_KEY_BYTES} bytes`, `${publicKey.byteLength} bytes`));
  }
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey).toString('base64url') }, format: 'jwk' });
}

function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('ed25519 public key without x');
  return Buffer.from(jwk.x, 'base64url');
}

/**
 * True when `signature` is a valid ed25519 signature of `data` by the raw `publicKey`. Malformed keys or
 * signatures (wrong lengths, a key that is not a curve point) give false, never an exception.
 */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.byteLength !== PUBLIC_KEY_BYTES || signature.byteLength !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, data, publicKeyFromRaw(publicKey), signature);
  } catch {
    return false;
  }
}

/** An ed25519 key pair and the peer id it gives. The private key never leaves this object. */
export class Identity {
  /** Raw 32-byte public key, as sent in RequestMeta.public_key. */
  readonly publicKey: Buffer;
  readonly peerId: string;
  readonly #privateKey: KeyObject;

  /** From a private KeyObject (ed25519); `loadOrCreateIdentity` and `Identity.generate` are the usual ways. */
  constructor(privateKey: KeyObject, readonly keyFile?: string) {
    if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
      throw new TypeError(invalidParameter('privateKey', 'an ed25519 private KeyObject', `${privateKey.type} ${privateKey.asymmetricKeyType ?? ''} key`));
    }
    this.#privateKey = privateKey;
    this.publicKey = rawPublicKey(createPublicKey(privateKey));
    this.peerId = peerIdFromPublicKey(this.publicKey);
  }

  /** A fresh identity held in memory only (tests, tools). */
  static generate(): Identity {
    return new Identity(generateKeyPairSync('ed25519').privateKey);
  }

  /** The 64-byte ed25519 signature of `data`. */
  sign(data: Uint8Array): Buffer {
    return sign(null, data, this.#privateKey);
  }

  /** PKCS#8 PEM of the private key: what identity.key holds. */
  exportPem(): string {
    return this.#privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  }
}

/** Refuses a key file that is not a regular file or that group or others may read or write. */
function checkKeyFile(file: string): void {
  const st = fs.statSync(file);
  if (!st.isFile()) throw new IdentityCorruptError(`${file} is not a regular file; move it away and start again to create a new identity`);
  if (process.platform === 'win32') return; // POSIX permission bits mean nothing there
  const loose = st.mode & 0o077;
  if (loose !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new IdentityInsecureError(
      `${file} has mode ${mode}: the identity key must not be readable or writable by group or others; ` +
        `fix it with: chmod 600 ${file}`,
    );
  }
}

/** Reads an existing identity.key (after the permission check). */
export function loadIdentity(file: string): Identity {
  checkKeyFile(file);
  const pem = fs.readFileSync(file, 'utf8');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (e) {
    throw new IdentityCorruptError(
      `${file} is not a PEM private key (${e instanceof Error ? e.message : String(e)}); ` +
        'restore it from a backup, or move it away to create a new identity (a new peer id)',
      { cause: e },
    );
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new IdentityCorruptError(
      `${file} holds a key of type ${key.asymmetricKeyType ?? 'unknown'}, not ed25519; move it away to create a new identity`,
    );
  }
  return new Identity(key, file);
}

/**
 * The identity in `stateDir`/identity.key: created on first start (the directory too, mode 0700, if
 * missing), reused afterwards. The new file is written atomically with mode 0600 from its creation and
 * published with link(2), so two processes starting at once end up with the same key. Synchronous: it runs
 * once at start-up on a file of 119 bytes.
 */
export function loadOrCreateIdentity(stateDir: string): Identity {
  if (typeof stateDir !== 'string' || stateDir.length === 0) throw new TypeError(invalidParameter('stateDir', 'a directory path', stateDir));
  const file = path.join(stateDir, IDENTITY_FILE);
  if (fs.existsSync(file)) return loadIdentity(file);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const created = Identity.generate();
  try {
    writeFileAtomicSync(file, Buffer.from(created.exportPem()), { mode: 0o600, exclusive: true });
  } catch (e) {
    if (hasCode(e, 'EEXIST')) return loadIdentity(file); // another process created it first: use theirs
    throw e;
  }
  return loadIdentity(file);
}

// The all-reduce secret sealed to a member's X25519 key: opens only with that key and that context, and any
// change to the sealed bytes is detected.
import { newSealingKey, openSecret, SealedSecretError, sealSecret, secretContext } from '../src/swarm/sealed-secret';

const secret = Buffer.from('0123456789abcdef0123456789abcdef');
const ctx = secretContext('run-1', 7, 2, 'ab'.repeat(20));

test('round trip, and a fresh ephemeral key and nonce every time', () => {
  const k = newSealingKey();
  expect(k.publicKey).toHaveLength(32);
  const a = sealSecret(secret, k.publicKey, ctx);
  const b = sealSecret(secret, k.publicKey, ctx);
  expect(openSecret(a, k, ctx).equals(secret)).toBe(true);
  expect(a.ephemeralPublicKey.equals(b.ephemeralPublicKey)).toBe(false);
  expect(a.ciphertext.equals(b.ciphertext)).toBe(false);
  expect(a.ciphertext.includes(secret)).toBe(false);
});

test('refused: another key, another context, altered bytes, malformed parts', () => {
  const k = newSealingKey();
  const s = sealSecret(secret, k.publicKey, ctx);
  expect(() => openSecret(s, newSealingKey(), ctx)).toThrow(SealedSecretError);
  expect(() => openSecret(s, k, secretContext('run-1', 7, 3, 'ab'.repeat(20)))).toThrow(/does not open/);
  for (const field of ['ciphertext', 'nonce', 'ephemeralPublicKey'] as const) {
    const bad = { ...s, [field]: Buffer.from(s[field]) };
    bad[field][0] ^= 1;
    expect(() => openSecret(bad, k, ctx)).toThrow(SealedSecretError);
  }
  expect(() => openSecret({ ...s, nonce: Buffer.alloc(3) }, k, ctx)).toThrow(/nonce is 3 bytes/);
  expect(() => openSecret({ ...s, ciphertext: Buffer.alloc(10) }, k, ctx)).toThrow(/too short/);
  expect(() => openSecret({ ...s, ephemeralPublicKey: Buffer.alloc(31) }, k, ctx)).toThrow(/31 bytes/);
  expect(() => sealSecret(secret, Buffer.alloc(16), ctx)).toThrow(/16 bytes/);
});

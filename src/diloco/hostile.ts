// Test-only misbehaviour, for the trust tests: a worker that cheats in one of the ways the validator must
// catch. Chosen with COVENANT_TEST_HOSTILE; refused (exit 2) where NODE_ENV is 'production', which the
// systemd units set, so a production install cannot turn it on.
// zero: a zero Δ; random-tokens: inner steps on random tokens; scaled: Δ × 25; replay: the first round's Δ
// again; ring-mismatch: ring data 1.5× its commitment; scale-lie: Δ × 4 with a scale bound (and norm)
// claimed 4× smaller, to escape the clip. inflated (Δ × 4, inside the norm check: clipped, not a proof of
// anything) is kept apart: it is not caught, only bounded. lying-validator: a member with the validator role
// that reports losses showing no gain for every member it checks (caught by the coordinator's audit).
// tampered-state: a data peer whose served global state has its outer momentum changed (refused by the member
// that fetches it: the payload is not the coordinator's).
export const HOSTILE_KINDS = ['zero', 'random-tokens', 'scaled', 'replay', 'ring-mismatch', 'scale-lie'] as const;
export const BOUNDED_KINDS = ['inflated'] as const;
export const VALIDATOR_KINDS = ['lying-validator'] as const;
export const DATA_PEER_KINDS = ['tampered-state'] as const;
export type HostileKind = (typeof HOSTILE_KINDS)[number] | (typeof BOUNDED_KINDS)[number] | (typeof VALIDATOR_KINDS)[number] | (typeof DATA_PEER_KINDS)[number];

/** The hostile kind this process was started with, if any; throws naming the problem for a bad or forbidden one. */
export function hostileKind(env: NodeJS.ProcessEnv = process.env): HostileKind | undefined {
  const k = env.COVENANT_TEST_HOSTILE;
  if (k === undefined || k === '') return undefined;
  if (env.NODE_ENV === 'production') throw new Error(`COVENANT_TEST_HOSTILE=${k} is a test-only switch and is refused in production (NODE_ENV=production)`);
  const kinds: readonly string[] = [...HOSTILE_KINDS, ...BOUNDED_KINDS, ...VALIDATOR_KINDS, ...DATA_PEER_KINDS];
  if (!kinds.includes(k)) throw new Error(`COVENANT_TEST_HOSTILE=${k} is not one of ${kinds.join(', ')}`);
  return k as HostileKind;
}

/** B×(T+1) uniformly random token ids: training on them is work on nobody's windows. */
export function randomTokens(B: number, T: number, vocab: number): Int32Array {
  const out = new Int32Array(B * (T + 1));
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(Math.random() * vocab);
  return out;
}

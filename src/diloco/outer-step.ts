// The DiLoCo outer optimizer: the pseudo-gradient Δ = θ(r) − θ_local and Nesterov momentum SGD on the
// averaged Δ. Every member runs this on bit-identical inputs and must reach a bit-identical θ(r+1), so
// each element is computed in one fixed order with every operation rounded to fp32 (Math.fround): the
// same bits as a plain fp32 loop in C without FMA contraction.
import { types } from 'node:util';
import { invalidParameter } from '../train/model-config';

export interface OuterSettings {
  /** Outer learning rate (DiLoCo default 0.7); >= 0. */
  lr: number;
  /** Nesterov momentum μ (DiLoCo default 0.9); in [0, 1). */
  momentum: number;
}

const f = Math.fround;

function checkArray(name: string, a: unknown, length?: number): void {
  if (!types.isFloat32Array(a)) throw new TypeError(invalidParameter(name, 'a Float32Array', a));
  if (length !== undefined && a.length !== length) {
    throw new RangeError(invalidParameter(name, `a Float32Array of ${length} elements`, a));
  }
}

/** Δ = start − local elementwise into `out` (allocated when absent; may alias either input). */
export function pseudoGradient(start: Float32Array, local: Float32Array, out?: Float32Array): Float32Array {
  checkArray('start', start);
  checkArray('local', local, start.length);
  if (out !== undefined) checkArray('out', out, start.length);
  const d = out ?? new Float32Array(start.length);
  for (let i = 0; i < d.length; i++) d[i] = start[i] - local[i];
  return d;
}

/**
 * In place, per element i: m ← μ·m + Δ; θ ← θ − lr·(Δ + μ·m) with the new m. lr and μ are taken as fp32.
 * A non-finite Δ is refused before anything is modified.
 */
export function outerStep(theta: Float32Array, momentum: Float32Array, delta: Float32Array, s: OuterSettings): void {
  checkArray('theta', theta);
  checkArray('momentum', momentum, theta.length);
  checkArray('delta', delta, theta.length);
  if (typeof s !== 'object' || s === null) throw new TypeError(invalidParameter('settings', 'an object', s));
  if (typeof s.lr !== 'number' || !Number.isFinite(s.lr) || s.lr < 0) {
    throw new RangeError(invalidParameter('settings.lr', 'a finite number >= 0', s.lr));
  }
  if (typeof s.momentum !== 'number' || !(s.momentum >= 0 && s.momentum < 1)) {
    throw new RangeError(invalidParameter('settings.momentum', 'a number in [0, 1)', s.momentum));
  }
  for (let i = 0; i < delta.length; i++) {
    if (!Number.isFinite(delta[i])) {
      throw new RangeError(`delta[${i}] is ${delta[i]}; the averaged pseudo-gradient must be finite (nothing was updated)`);
    }
  }
  const lr = f(s.lr);
  const mu = f(s.momentum);
  for (let i = 0; i < theta.length; i++) {
    const d = delta[i];
    const m = f(f(mu * momentum[i]) + d);
    momentum[i] = m;
    theta[i] = f(theta[i] - f(lr * f(d + f(mu * m))));
  }
}

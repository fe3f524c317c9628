// Where a worker compresses its round's Δ with error feedback. On the host: Δ = θ_start − params as a
// Float32Array, then the Compressor (the CPU path, and the only one the test-only hostile switches can bend).
// In the engine: markRoundStart / compressDelta, so on a CUDA device θ_start, Δ and the residual stay on the
// GPU and only the int8 codes and scales cross to the host. Both give the same bits for the same parameters.
import { Compressor, Engine, Int8Quantized } from '../native';
import { pseudoGradient } from './outer-step';

export interface DeltaCompression {
  readonly where: 'host' | 'engine';
  /** The round starts from the engine's current parameters (θ_start). */
  begin(theta: Float32Array): void;
  /** Δ since begin(), compressed; `bend` (host only) may change Δ first (the hostile switches). */
  compress(bend?: (delta: Float32Array) => void): Promise<Int8Quantized>;
  /** The round did not commit: the residual from before its compress() comes back. */
  undo(): void;
  residual(): Float32Array;
  loadResidual(r: Float32Array): void;
  reset(): void;
}

export function hostCompression(engine: Engine, block: number): DeltaCompression {
  const c = new Compressor(engine.numParams, block);
  let start: Float32Array | undefined;
  let before: Float32Array | undefined;
  return {
    where: 'host',
    begin(theta) {
      start = theta;
      before = undefined;
    },
    async compress(bend) {
      if (!start) throw new Error('compress() before begin()');
      const delta = pseudoGradient(start, engine.params());
      bend?.(delta);
      before = Float32Array.from(c.residual());
      return c.compress(delta);
    },
    undo() {
      if (before) c.loadResidual(before);
      before = undefined;
    },
    residual: () => Float32Array.from(c.residual()),
    loadResidual: (r) => c.loadResidual(r),
    reset: () => c.reset(),
  };
}

export function engineCompression(engine: Engine, block: number): DeltaCompression {
  return {
    where: 'engine',
    begin: () => engine.markRoundStart(),
    compress: () => engine.compressDelta(block),
    undo: () => void engine.undoCompressDelta(),
    residual: () => engine.residual(),
    loadResidual: (r) => engine.loadResidual(r),
    reset: () => engine.resetResidual(),
  };
}

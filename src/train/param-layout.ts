// The order and shapes of the tensors inside the engine's one flat fp32 parameter buffer.
// It mirrors native/model/gpt.cpp (param_sizes); a test checks that the totals agree.
import { ModelConfig } from './model-config';

export interface ParamTensor {
  /** Name inside the engine (llm.c naming); layer tensors are stacked over L. */
  name: string;
  /** Shape as stored in the flat buffer, row-major. */
  shape: number[];
  /** Offset in elements into the flat buffer. */
  offset: number;
  /** Number of elements. */
  size: number;
  /** Decoupled weight decay applies to matrices only (not biases, LayerNorm or position-free vectors). */
  decay: boolean;
}

/**
 * Layout, in buffer order (V vocab, maxT positions, L layers, C channels):
 * wte (V,C) wpe (maxT,C) ln1w (L,C) ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C) attprojb (L,C)
 * ln2w (L,C) ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C) lnfw (C) lnfb (C).
 * Linear weights are (out, in), as in torch.nn.Linear.
 */
export function paramLayout(cfg: ModelConfig): ParamTensor[] {
  const { vocabSize: V, maxSeqLen: maxT, numLayers: L, channels: C } = cfg;
  const spec: Array<[string, number[], boolean]> = [
    ['wte', [V, C], true],
    ['wpe', [maxT, C], true],
    ['ln1w', [L, C], false],
    ['ln1b', [L, C], false],
    ['qkvw', [L, 3 * C, C], true],
    ['qkvb', [L, 3 * C], false],
    ['attprojw', [L, C, C], true],
    ['attprojb', [L, C], false],
    ['ln2w', [L, C], false],
    ['ln2b', [L, C], false],
    ['fcw', [L, 4 * C, C], true],
    ['fcb', [L, 4 * C], false],
    ['fcprojw', [L, C, 4 * C], true],
    ['fcprojb', [L, C], false],
    ['lnfw', [C], false],
    ['lnfb', [C], false],
  ];
  let offset = 0;
  return spec.map(([name, shape, decay]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const t = { name, shape, offset, size, decay };
    offset += size;
    return t;
  });
}

export function numParams(cfg: ModelConfig): number {
  return paramLayout(cfg).reduce((a, t) => a + t.size, 0);
}

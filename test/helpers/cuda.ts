// Whether this machine can build a CUDA engine (a CUDA build and a device), for tests with a GPU branch.
import { Engine } from '../../src/native';

let cached: boolean | undefined;

export function haveCudaDevice(): boolean {
  if (cached === undefined) {
    try {
      Engine.create({ model: { vocabSize: 64, maxSeqLen: 8, numLayers: 1, numHeads: 2, channels: 32 }, device: 'cuda', seed: 1 }).dispose();
      cached = true;
    } catch {
      cached = false;
    }
  }
  return cached;
}

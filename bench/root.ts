// The repository root, found from dist/bench/ where the compiled benches run.
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');

// A bench's scratch directory (data, run configs, every process's log): removed when the bench succeeds or
// is interrupted (SIGINT/SIGTERM exit the process, no finally runs), kept and named when it fails.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { exitOnSignals } from './json-proc';

export async function withWorkDir(name: string, body: (work: string) => Promise<void>): Promise<void> {
  const releaseSignals = exitOnSignals();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `covenant-${name}-`));
  const removeWork = () => fs.rmSync(work, { recursive: true, force: true });
  process.on('exit', removeWork);
  let ok = false;
  try {
    await body(work);
    ok = true;
  } finally {
    releaseSignals();
    process.off('exit', removeWork);
    if (ok) removeWork();
    else console.error(`${name}: the work directory (data, run configs, every process's log) is kept: ${work}`);
  }
}

// Crash-safe file replacement: write a temp file in the same directory, fsync it, rename it over the
// target, fsync the directory. A reader sees the old file or the new one, never a torn one.
import * as fs from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';

/** One write call stays below the 2 GiB that a single write(2) may be asked for. */
const MAX_WRITE = 1 << 30;

export type AtomicData = Buffer | Uint8Array | ReadonlyArray<Buffer | Uint8Array>;

export interface AtomicWriteOptions {
  /** Permission bits of the new file (default 0o644, less the umask); the temp file has them from creation. */
  mode?: number;
  /**
   * Create only: publish with link(2) instead of rename(2), so an existing target is never replaced and the
   * call fails with EEXIST (the temp file is removed). For files whose first writer must win (identity.key).
   */
  exclusive?: boolean;
}

function pieces(data: AtomicData): Uint8Array[] {
  if (data instanceof Uint8Array) return [data];
  if (Array.isArray(data) && data.every((p) => p instanceof Uint8Array)) return [...data];
  throw new TypeError('Expected a Buffer, Uint8Array or an array of them for data');
}

function tempPath(target: string): string {
  return `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Directory fsync makes the rename durable; some platforms (Windows) refuse to open a directory. */
function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    if (process.platform !== 'win32') throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(dir, 'r');
    await handle.sync();
  } catch (e) {
    if (process.platform !== 'win32') throw e;
  } finally {
    await handle?.close();
  }
}

/** Synchronous atomic write; for CLI batch jobs and small files. */
export function writeFileAtomicSync(target: string, data: AtomicData, options: AtomicWriteOptions = {}): void {
  const parts = pieces(data);
  const tmp = tempPath(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', options.mode ?? 0o644);
    for (const p of parts) {
      let done = 0;
      while (done < p.byteLength) done += fs.writeSync(fd, p, done, Math.min(p.byteLength - done, MAX_WRITE));
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    if (options.exclusive) {
      fs.linkSync(tmp, target);
      fs.rmSync(tmp, { force: true });
    } else {
      fs.renameSync(tmp, target);
    }
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDirSync(path.dirname(path.resolve(target)));
}

/** Asynchronous atomic write; does not block the event loop while large files (checkpoints) are written. */
export async function writeFileAtomic(target: string, data: AtomicData, options: AtomicWriteOptions = {}): Promise<void> {
  const parts = pieces(data);
  const tmp = tempPath(target);
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(tmp, 'wx', options.mode ?? 0o644);
    for (const p of parts) {
      let done = 0;
      while (done < p.byteLength) {
        const { bytesWritten } = await handle.write(p, done, Math.min(p.byteLength - done, MAX_WRITE));
        done += bytesWritten;
      }
    }
    await handle.sync();
    await handle.close();
    handle = undefined;
    if (options.exclusive) {
      await fs.promises.link(tmp, target);
      await fs.promises.rm(tmp, { force: true });
    } else {
      await fs.promises.rename(tmp, target);
    }
  } catch (e) {
    await handle?.close();
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(path.dirname(path.resolve(target)));
}

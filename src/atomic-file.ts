/**
 * The agent's one atomic file writer (CNI conflists and cache, worker resolv.conf/hosts, the
 * last-used times). Whole-file writes that readers never see half done: the data goes to a temp file in the same
 * directory (same filesystem, so the final step is atomic), is fsync'ed, then renamed or linked
 * into place. Temp names start with `.` and end in `.tmp` so that nothing scanning the
 * directory for `*.conflist` or cache entries picks them up.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { errnoCode } from './errors.js';

export interface WriteAtomicOptions {
  /** false: fail with EEXIST instead of replacing an existing file. Default true. */
  readonly overwrite?: boolean;
  readonly mode?: number;
  /** true: chmod the file to `mode` exactly, whatever the umask (the systemd unit sets UMask=0077). Default false. */
  readonly exactMode?: boolean;
  /** fsync before the rename. Default true; hot-path caches that tolerate loss pass false. */
  readonly sync?: boolean;
}

/**
 * Writes `data` to `file` atomically. With `overwrite: false` the final step is link(2), which
 * fails with EEXIST when the file exists (even when another process created it a moment ago),
 * so an operator's file is never replaced. Returns false in that case, true when written.
 * Leaves no temp file behind on any failure.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: WriteAtomicOptions = {}): Promise<boolean> {
  const { overwrite = true, mode = 0o644, sync = true, exactMode = false } = opts;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    try {
      // The open mode above is masked by the umask; chmod is not.
      if (exactMode) await fh.chmod(mode);
      await fh.writeFile(data);
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
    if (overwrite) {
      await fs.rename(tmp, file);
      return true;
    }
    try {
      await fs.link(tmp, file);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') return false;
      throw err;
    }
  } finally {
    // After a rename the temp name is gone already; after link (or a failure) it still exists.
    await fs.rm(tmp, { force: true });
  }
}

/** True when `name` (a directory entry) is a temp file writeFileAtomic left for `file` (e.g. after a crash). */
export function isAtomicTempOf(name: string, file: string): boolean {
  return name.startsWith(`.${path.basename(file)}.`) && name.endsWith('.tmp');
}

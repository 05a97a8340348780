/**
 * Mounts a container's snapshot read-only (and nodev, nosuid, noexec) on a private temp dir
 * under the agent's state dir, for as long as it takes to read a few files from it, as
 * containerd's Go client does before it looks up an image's user. Mounting works for every
 * snapshotter (overlayfs, native, or a block device), where reading layer directories would
 * only work for overlay. Node has no mount(2): util-linux `mount`/`umount` do the work.
 *
 * An overlay snapshot is mounted with its (empty, freshly prepared) upper dir as the top lower
 * dir and without upper and work dirs, so nothing can be written and the work dir stays free
 * for the task's own mount; any other mount gets `ro`. A mount left by a crash stays visible
 * in /proc/self/mountinfo under mountsDir(): start-up reconciliation unmounts it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, realpath, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SnapshotMount {
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** How long one `mount`/`umount` may take before it is killed. */
const MOUNT_TIMEOUT_MS = 10_000;
/** Flags every temp mount gets: nothing in an image may act as a device, setuid binary or program here. */
const SAFE_FLAGS = ['ro', 'nodev', 'nosuid', 'noexec'];
/** Options the read-only mount drops: write mode and the ways of asking for a bind. */
const DROPPED = new Set(['rw', 'ro', 'bind', 'rbind', ...SAFE_FLAGS]);
/** The kernel takes at most a page of mount data; longer lowerdir lists go relative (below). */
const MAX_MOUNT_DATA = 4000;

/** `<stateDir>/image-mounts`: the parent of every temp mount. */
export function mountsDir(stateDir: string): string {
  return path.join(stateDir, 'image-mounts');
}

/** The read-only version of a snapshot's mounts (see the top of this file). */
export function readonlyMounts(mounts: readonly SnapshotMount[]): SnapshotMount[] {
  return mounts.map((m) => {
    if (m.type === 'overlay') {
      const upper = m.options.find((o) => o.startsWith('upperdir='))?.slice('upperdir='.length);
      const lower = m.options.find((o) => o.startsWith('lowerdir='))?.slice('lowerdir='.length);
      const lowers = [...(upper ? [upper] : []), ...(lower ? lower.split(':') : [])];
      const rest = m.options.filter(
        (o) => !o.startsWith('upperdir=') && !o.startsWith('workdir=') && !o.startsWith('lowerdir=') && !DROPPED.has(o),
      );
      return { type: 'overlay', source: m.source || 'overlay', options: [...rest, `lowerdir=${lowers.join(':')}`, ...SAFE_FLAGS] };
    }
    const isBind = m.type === 'bind' || m.type === 'rbind' || m.options.includes('bind') || m.options.includes('rbind');
    const rest = m.options.filter((o) => !DROPPED.has(o));
    return { type: isBind ? 'bind' : m.type, source: m.source, options: [...rest, ...SAFE_FLAGS] };
  });
}

/** The longest common directory of `dirs` ('' when only / is shared). */
function commonDir(dirs: readonly string[]): string {
  let common = path.dirname(dirs[0] ?? '/');
  while (common !== '/' && !dirs.every((d) => d.startsWith(common + '/'))) common = path.dirname(common);
  return common === '/' ? '' : common;
}

/** `mount` arguments (and working dir) for one read-only mount onto `target`. */
export function mountArgs(m: SnapshotMount, target: string): { args: string[]; cwd?: string } {
  if (m.type === 'bind') {
    // util-linux applies ro/nodev/nosuid/noexec of a bind mount with the remount it needs.
    return { args: ['--bind', '-o', m.options.join(','), '--', m.source, target] };
  }
  let options = m.options;
  let cwd: string | undefined;
  const lower = options.find((o) => o.startsWith('lowerdir='));
  if (m.type === 'overlay' && lower && options.join(',').length > MAX_MOUNT_DATA) {
    // As containerd does: mount from the layers' common parent with relative lowerdirs.
    const dirs = lower.slice('lowerdir='.length).split(':');
    const base = commonDir(dirs);
    if (base !== '') {
      cwd = base;
      options = options.map((o) => (o === lower ? `lowerdir=${dirs.map((d) => path.relative(base, d)).join(':')}` : o));
    }
  }
  return { args: ['-t', m.type, '-o', options.join(','), '--', m.source || 'none', target], ...(cwd ? { cwd } : {}) };
}

async function umount(target: string): Promise<void> {
  try {
    await run('umount', ['--', target], { timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL' });
  } catch {
    // Busy (a read that timed out still holds a file) or stuck: detach it now, the kernel
    // finishes the unmount once the last user is gone.
    await run('umount', ['-l', '--', target], { timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL' });
  }
}

/** The first line of what `mount` said (about our own paths and options), or the error's message. */
const stderrOf = (err: unknown): string => {
  const stderr = (err as { stderr?: unknown }).stderr;
  const text = (typeof stderr === 'string' && stderr.trim() !== '' ? stderr : err instanceof Error ? err.message : 'failed').trim();
  return text.split('\n')[0]?.slice(0, 300) ?? '';
};

export class MountError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MountError';
  }
}

/**
 * Runs `fn` with the snapshot described by `mounts` mounted read-only on a new private dir
 * under mountsDir(stateDir), then unmounts it and removes the dir, whatever `fn` did.
 */
export async function withReadonlyMount<T>(
  stateDir: string,
  mounts: readonly SnapshotMount[],
  fn: (root: string) => Promise<T>,
): Promise<T> {
  if (mounts.length === 0) throw new MountError('the snapshot has no mounts');
  const parent = mountsDir(stateDir);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const target = path.join(parent, randomBytes(8).toString('hex'));
  await mkdir(target, { mode: 0o700 });
  let mounted = 0;
  try {
    for (const m of readonlyMounts(mounts)) {
      const { args, cwd } = mountArgs(m, target);
      try {
        await run('mount', args, { timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL', ...(cwd ? { cwd } : {}) });
      } catch (err) {
        throw new MountError(`mount -t ${m.type} failed: ${stderrOf(err)}`, { cause: err });
      }
      mounted++;
    }
    return await fn(target);
  } finally {
    for (; mounted > 0; mounted--) await umount(target);
    await rmdir(target);
  }
}

/** Decodes the octal escapes (\040 for a space…) of a /proc/self/mountinfo path. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or under `dir`, deepest first (each listed once per stacked mount). */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  let real: string;
  try {
    real = await realpath(dir);
  } catch {
    return [];
  }
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => unescapeMountPath(l.split(' ')[4] ?? ''))
    .filter((p) => p === real || p.startsWith(real + '/'))
    .sort((a, b) => b.length - a.length);
}

/**
 * Unmounts and removes every temp mount dir an earlier run left (an agent killed while it read
 * an image's files). Only safe when no lookup is in flight: at start-up. Returns the number of
 * mounts removed. A dir is only ever rmdir'ed, so a mount that would not go never loses files.
 */
export async function removeStaleMounts(stateDir: string): Promise<number> {
  const parent = mountsDir(stateDir);
  let removed = 0;
  for (const point of await mountPointsUnder(parent)) {
    try {
      await umount(point);
      removed++;
    } catch {
      // Already gone with an earlier lazy unmount of the same point.
    }
  }
  let entries: string[] = [];
  try {
    entries = await readdir(parent);
  } catch {
    return removed;
  }
  for (const e of entries) await rmdir(path.join(parent, e)).catch(() => undefined);
  return removed;
}

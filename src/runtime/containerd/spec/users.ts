/**
 * Resolves an image's `User` (`uid`, `uid:gid`, `name`, `name:group`) to numeric ids, reading
 * /etc/passwd and /etc/group from the container's rootfs. The Go client temp-mounts the
 * snapshot for this (docs/containerd.md#default-spec); the agent runs on the host as root, so it reads
 * the files straight from the snapshot's directories instead: the overlay's upper dir, then
 * each lower dir top-down — no mount needed.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../../errors.js';
import type { OciUser } from './types.js';

export interface MountLike {
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** Directories that make up the rootfs described by `mounts`, topmost first. */
export function rootfsLayers(mounts: readonly MountLike[]): string[] {
  const m = mounts[0];
  if (!m) return [];
  if (m.type === 'bind' || m.type === 'rbind') return [m.source];
  if (m.type === 'overlay') {
    const dirs: string[] = [];
    const upper = m.options.find((o) => o.startsWith('upperdir='));
    if (upper) dirs.push(upper.slice('upperdir='.length));
    const lower = m.options.find((o) => o.startsWith('lowerdir='));
    if (lower) dirs.push(...lower.slice('lowerdir='.length).split(':'));
    return dirs;
  }
  return [];
}

/** Reads `file` (relative to /) from the topmost layer that has it; undefined when none does. */
async function readFromLayers(layers: readonly string[], file: string): Promise<string | undefined> {
  for (const dir of layers) {
    try {
      return await readFile(path.join(dir, file), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return undefined;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

function parseColonFile(text: string | undefined): string[][] {
  if (text === undefined) return [];
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'));
}

const isNumeric = (s: string): boolean => /^\d+$/.test(s);

/**
 * Numeric user for the spec. Blank → root. Unknown names → INVALID_ARGUMENT naming them.
 * As in containerd: a numeric uid without a passwd entry gets gid 0; additional gids come
 * from /etc/group memberships of the user's name.
 */
export async function resolveUser(user: string | undefined, mounts: readonly MountLike[]): Promise<OciUser> {
  const spec = (user ?? '').trim();
  if (spec === '') return { uid: 0, gid: 0, additionalGids: [0] };
  const [u = '', g] = spec.split(':', 2);
  const layers = rootfsLayers(mounts);
  const needFiles = !isNumeric(u) || (g !== undefined && !isNumeric(g)) || g === undefined;
  const passwd: PasswdEntry[] = needFiles
    ? parseColonFile(await readFromLayers(layers, 'etc/passwd')).map((f) => ({ name: f[0] ?? '', uid: Number(f[2]), gid: Number(f[3]) }))
    : [];
  const groups = needFiles ? parseColonFile(await readFromLayers(layers, 'etc/group')) : [];

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (isNumeric(u)) {
    uid = Number(u);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === u);
    if (!entry) throw new AgentError('INVALID_ARGUMENT', `image user ${JSON.stringify(u)} is not in the image's /etc/passwd`);
    uid = entry.uid;
  }
  let gid: number;
  if (g === undefined) gid = entry?.gid ?? 0;
  else if (isNumeric(g)) gid = Number(g);
  else {
    const grp = groups.find((f) => f[0] === g);
    if (!grp) throw new AgentError('INVALID_ARGUMENT', `image group ${JSON.stringify(g)} is not in the image's /etc/group`);
    gid = Number(grp[2]);
  }
  const extra = entry ? groups.filter((f) => (f[3] ?? '').split(',').includes(entry.name)).map((f) => Number(f[2])) : [];
  const additionalGids = [...new Set([gid, ...extra])].filter((n) => Number.isSafeInteger(n));
  return { uid, gid, additionalGids };
}

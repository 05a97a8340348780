/**
 * Resolves a path inside a directory tree taken from an image (a read-only mount of a
 * container's snapshot) the way the container itself would see it: every symlink is followed
 * relative to the tree's root, never the host's, and `..` stops at that root. Absolute link
 * targets start again at the root; relative ones at the link's directory. This is the walk that
 * containerd's user lookup gets from filepath-securejoin; here it is written out because the
 * agent reads image files from the host side, as root, where a plain open() would follow an
 * image's `/etc/passwd -> /etc/shadow` to the host's file.
 */
import { lstat, readlink } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../../../errors.js';

/** As many symlinks as Linux follows in one path walk (MAXSYMLINKS) is far beyond any real image. */
export const MAX_SYMLINKS = 40;

export class SymlinkLoopError extends Error {
  readonly path: string;
  constructor(unsafePath: string) {
    super(`${unsafePath}: more than ${MAX_SYMLINKS} symlinks`);
    this.name = 'SymlinkLoopError';
    this.path = unsafePath;
  }
}

const missing = (err: unknown): boolean => {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
};

/**
 * The host path of `unsafePath` (absolute or relative, as seen inside the tree) under `root`.
 * Every component of the result except possibly the last is a real directory of the tree or
 * does not exist; the last is not a symlink (or does not exist). A component that does not
 * exist is taken as it is, so the result names a missing file and the caller's lstat says so.
 * Throws SymlinkLoopError after MAX_SYMLINKS links, and passes on other lstat/readlink errors.
 */
export async function secureJoin(root: string, unsafePath: string): Promise<string> {
  const queue = unsafePath.split('/');
  const resolved: string[] = [];
  let links = 0;
  while (queue.length > 0) {
    const part = queue.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop(); // at the root this is a no-op: `..` of / is /
      continue;
    }
    const candidate = path.join(root, ...resolved, part);
    let isLink: boolean;
    try {
      isLink = (await lstat(candidate)).isSymbolicLink();
    } catch (err) {
      if (!missing(err)) throw err;
      isLink = false;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) throw new SymlinkLoopError(unsafePath);
    const target = await readlink(candidate);
    if (target.startsWith('/')) resolved.length = 0;
    queue.unshift(...target.split('/'));
  }
  return path.join(root, ...resolved);
}

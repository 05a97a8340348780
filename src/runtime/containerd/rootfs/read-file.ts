/**
 * Reads one small regular file from an image's tree (see secure-join.ts) without ever blocking
 * or following a link out of it: the path is resolved inside the tree, lstat must say "regular
 * file" before anything is opened (a FIFO, device or socket is never opened at all: opening a
 * FIFO waits for a writer, and reading /dev/zero never ends, either of which would hold one of
 * libuv's four pool threads for good), the open is O_NOFOLLOW|O_NONBLOCK|O_NOCTTY, fstat must
 * agree with the lstat, and at most `maxBytes` + 1 bytes are read.
 */
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { errnoCode } from '../../../errors.js';
import { secureJoin } from './secure-join.js';

/** Why a file could not be used. `detail` is ours (a type name or an errno code), never file content. */
export type ImageFileProblem =
  | { readonly kind: 'not-regular'; readonly detail: string }
  | { readonly kind: 'too-large'; readonly detail: string }
  | { readonly kind: 'symlink-loop'; readonly detail: string }
  | { readonly kind: 'unreadable'; readonly detail: string };

export class ImageFileError extends Error {
  readonly file: string;
  readonly problem: ImageFileProblem;
  constructor(file: string, problem: ImageFileProblem) {
    super(`${file}: ${problem.kind} (${problem.detail})`);
    this.name = 'ImageFileError';
    this.file = file;
    this.problem = problem;
  }
}

/** What kind of inode `st` is, in words. */
export function fileTypeName(st: Stats): string {
  if (st.isFile()) return 'regular file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'special file';
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

const isMissing = (err: unknown): boolean => {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
};

const errnoOf = (err: unknown): string => errnoCode(err) ?? 'error';

/**
 * The bytes of `file` (a path as seen inside the tree rooted at `root`), or undefined when it
 * does not exist. Throws ImageFileError for anything that is not a regular file of at most
 * `maxBytes`, a symlink loop, or an I/O error.
 */
export async function readImageFile(root: string, file: string, maxBytes: number): Promise<Buffer | undefined> {
  let host: string;
  try {
    host = await secureJoin(root, file);
  } catch (err) {
    if (err instanceof Error && err.name === 'SymlinkLoopError')
      throw new ImageFileError(file, { kind: 'symlink-loop', detail: 'too many symlinks' });
    if (isMissing(err)) return undefined;
    throw new ImageFileError(file, { kind: 'unreadable', detail: errnoOf(err) });
  }
  let st: Stats;
  try {
    st = await lstat(host);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw new ImageFileError(file, { kind: 'unreadable', detail: errnoOf(err) });
  }
  if (!st.isFile()) throw new ImageFileError(file, { kind: 'not-regular', detail: fileTypeName(st) });
  if (st.size > maxBytes) throw new ImageFileError(file, { kind: 'too-large', detail: `over ${maxBytes} bytes` });
  let fh;
  try {
    fh = await open(host, OPEN_FLAGS);
  } catch (err) {
    // ELOOP: the last component became a symlink after the lstat.
    throw new ImageFileError(file, { kind: 'unreadable', detail: errnoOf(err) });
  }
  try {
    const fst = await fh.stat();
    if (!fst.isFile() || fst.ino !== st.ino || fst.dev !== st.dev) {
      throw new ImageFileError(file, { kind: 'not-regular', detail: `changed to a ${fileTypeName(fst)} while being opened` });
    }
    // One byte over the limit tells "exactly the limit" from "more".
    const buf = Buffer.allocUnsafe(maxBytes + 1);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got > maxBytes) throw new ImageFileError(file, { kind: 'too-large', detail: `over ${maxBytes} bytes` });
    return buf.subarray(0, got);
  } catch (err) {
    if (err instanceof ImageFileError) throw err;
    throw new ImageFileError(file, { kind: 'unreadable', detail: errnoOf(err) });
  } finally {
    await fh.close();
  }
}

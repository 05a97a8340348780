/**
 * The numeric user a worker runs as, from its image's `USER`, looked up in the image's own
 * /etc/passwd and /etc/group: the container's snapshot is mounted read-only on a temp dir
 * (rootfs/readonly-mount.ts) and the two files are read with every path component resolved
 * inside the image (rootfs/read-file.ts). So an image cannot point the lookup at a host file,
 * nor make it hang on a FIFO or device. Blank and numeric `uid:gid` users need no files.
 *
 * Results are cached per (top chain id, USER): the same layers give the same files, so
 * repeated Ensures of one image pay no mount. Failures are not cached.
 */
import { AgentError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import { ImageFileError, readImageFile, type ImageFileProblem } from './rootfs/read-file.js';
import { MountError, withReadonlyMount, type SnapshotMount } from './rootfs/readonly-mount.js';
import { numericUser, resolveUser, safeUserText, type AccountFiles } from './spec/users.js';
import type { OciUser } from './spec/types.js';

/** Largest /etc/passwd or /etc/group read; real ones are a few KiB. */
export const MAX_ACCOUNT_FILE_BYTES = 1024 * 1024;
/** How long reading the two files may take once the snapshot is mounted. */
export const READ_TIMEOUT_MS = 5000;
/** Entries in the (chain id, USER) cache. */
const CACHE_SIZE = 256;

export interface ImageRef {
  /** Image name, for messages. */
  readonly name: string;
  /** Top chain id: identifies the layers, hence the files. */
  readonly chainId: string;
}

/** Words for a problem with an account file, and the code it gets. */
function describe(problem: ImageFileProblem): { code: 'INVALID_ARGUMENT' | 'FAILED_PRECONDITION'; text: string } {
  switch (problem.kind) {
    case 'not-regular':
      return { code: 'INVALID_ARGUMENT', text: `is a ${problem.detail}, not a regular file` };
    case 'too-large':
      return { code: 'INVALID_ARGUMENT', text: `is larger than ${MAX_ACCOUNT_FILE_BYTES} bytes` };
    case 'symlink-loop':
      return { code: 'INVALID_ARGUMENT', text: 'goes through too many symlinks (a loop?)' };
    case 'unreadable':
      return { code: 'FAILED_PRECONDITION', text: `could not be read (${problem.detail})` };
  }
}

export class ImageUsers {
  readonly #stateDir: string;
  readonly #log: Logger;
  readonly #cache = new Map<string, OciUser>();
  readonly #timeoutMs: number;
  /** Snapshot mounts made so far (for tests and benchmarks). */
  mounts = 0;

  constructor(opts: { stateDir: string; log: Logger; timeoutMs?: number }) {
    this.#stateDir = opts.stateDir;
    this.#log = opts.log;
    this.#timeoutMs = opts.timeoutMs ?? READ_TIMEOUT_MS;
  }

  /**
   * The ids of `user` in `image`, whose container snapshot has `mounts`. Throws AgentError:
   * INVALID_ARGUMENT when the image decides the failure (no such user or group, an account
   * file that is not a small regular file), FAILED_PRECONDITION when this host could not mount
   * or read the snapshot in time.
   */
  async resolve(image: ImageRef, user: string | undefined, mounts: readonly SnapshotMount[]): Promise<OciUser> {
    const fast = numericUser(user);
    if (fast) return fast;
    const key = `${image.chainId}\n${user ?? ''}`;
    const hit = this.#cache.get(key);
    if (hit) {
      // Map order is the LRU order: move to the back.
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      return hit;
    }
    const files = await this.#readAccountFiles(image, user ?? '', mounts);
    const resolved = resolveUser(user, files, image.name);
    this.#cache.set(key, resolved);
    if (this.#cache.size > CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
    return resolved;
  }

  async #readAccountFiles(image: ImageRef, user: string, mounts: readonly SnapshotMount[]): Promise<AccountFiles> {
    const where = `image ${image.name}: USER "${safeUserText(user)}"`;
    this.mounts++;
    this.#log.debug(
      { image: image.name, chainId: image.chainId },
      'image user lookup: reading /etc/passwd and /etc/group from a read-only mount of the snapshot',
    );
    try {
      return await withReadonlyMount(this.#stateDir, mounts, (root) =>
        withTimeout(this.#read(root), this.#timeoutMs, `${where}: reading /etc/passwd and /etc/group took over ${this.#timeoutMs} ms`),
      );
    } catch (err) {
      if (err instanceof AgentError) throw err;
      if (err instanceof ImageFileError) {
        const d = describe(err.problem);
        throw new AgentError(
          d.code,
          `${where}: the image's ${err.file} ${d.text}; the agent reads only regular files of at most ${MAX_ACCOUNT_FILE_BYTES} bytes, resolved inside the image`,
        );
      }
      if (err instanceof MountError)
        throw new AgentError(
          'FAILED_PRECONDITION',
          `${where}: could not mount the image's root filesystem read-only to look the user up: ${err.message}`,
          { cause: err },
        );
      this.#log.warn({ image: image.name, err: errorText(err) }, 'image user lookup failed');
      throw new AgentError('FAILED_PRECONDITION', `${where}: could not look the user up in the image's files: ${errorText(err)}`, {
        cause: err,
      });
    }
  }

  async #read(root: string): Promise<AccountFiles> {
    const [passwd, group] = await Promise.all([
      readImageFile(root, '/etc/passwd', MAX_ACCOUNT_FILE_BYTES),
      readImageFile(root, '/etc/group', MAX_ACCOUNT_FILE_BYTES),
    ]);
    return { passwd: passwd?.toString('utf8'), group: group?.toString('utf8') };
  }
}

/** `p`, or a FAILED_PRECONDITION after `ms`. The read is left to finish on its own; the unmount that follows is lazy if need be. */
function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new AgentError('FAILED_PRECONDITION', message));
    }, ms);
  });
  return Promise.race([p, timeout]).finally(() => {
    clearTimeout(timer);
  });
}

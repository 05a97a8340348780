/**
 * Named network namespaces, one per worker, made and removed by the agent with iproute2's
 * `ip netns` (a fresh netns bind-mounted at `/run/netns/<name>`). A named netns outlives the
 * task, has a stable path and can be DEL'ed at any time; `/proc/<pid>/ns/net` dies with the
 * task and its pid may be reused by a stranger (reference weakness docs/go-agent.md#w4, docs/containerd.md#netns).
 *
 * Names: the worker id (≤ 76 characters, containerd's id grammar) is used as is. `ip netns`
 * accepts any file name shorter than NAME_MAX (255); a 76-character name was verified with
 * iproute2 6.1, so no shortened form is needed.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AgentError, errnoCode, errorText } from '../errors.js';
import { KeyedLock } from '../concurrency/keyed-lock.js';
import { redactHost } from '../redact.js';

/** Where iproute2 pins named netns (its compiled-in NETNS_RUN_DIR). */
export const NETNS_RUN_DIR = '/run/netns';

/** A file name that `ip netns` accepts and that cannot escape the run dir. */
const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,253}$/;
/** `ip` normally answers in milliseconds; this only bounds a wedged mount table. */
const IP_TIMEOUT_MS = 10_000;
/** statfs(2) f_type of a netns file: nsfs for a bind mount, proc for /proc/<pid>/ns/net. */
const NSFS_MAGIC = 0x6e736673;
const PROC_SUPER_MAGIC = 0x9fa0;

/** Throws INVALID_ARGUMENT unless `name` is a usable netns name. */
export function checkNetnsName(name: string): void {
  if (!NETNS_NAME.test(name)) {
    throw new AgentError(
      'INVALID_ARGUMENT',
      `netns name ${JSON.stringify(name)} is invalid (1–254 of [A-Za-z0-9_.-], starting with a letter or digit)`,
    );
  }
}

/** The path of the named netns `name` (whether or not it exists). */
export function netnsPath(name: string): string {
  checkNetnsName(name);
  return path.join(NETNS_RUN_DIR, name);
}

// Calls for one name run one after another, so that a create racing a remove of the same
// worker cannot interleave; different names run in parallel.
const locks = new KeyedLock('netns');

function withNameLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  return locks.run(name, undefined, fn);
}

// The first `ip netns add` on a host turns /run/netns into a shared mount point; two first
// calls at once can stack two such mounts. So the first add of this process runs alone and the
// others wait for it (whatever its outcome); afterwards adds run in parallel.
let firstAdd: Promise<unknown> | undefined;

/**
 * Creates the named netns `name` and returns its path (`/run/netns/<name>`). Throws
 * INVALID_ARGUMENT (bad name), ALREADY_EXISTS (a netns or file of that name exists: a
 * leftover for reconciliation to remove) or INTERNAL (`ip` failed; nothing is left behind, as
 * `ip netns add` removes its file on failure).
 */
export async function createNetns(name: string): Promise<string> {
  const file = netnsPath(name);
  return withNameLock(name, async () => {
    if (await exists(file)) throw new AgentError('ALREADY_EXISTS', `netns ${name} already exists`);
    const run = (): Promise<void> => ip(['netns', 'add', name], `create netns ${name}`);
    if (firstAdd === undefined) {
      const p = run();
      firstAdd = p.catch(() => undefined);
      await p;
    } else {
      await firstAdd;
      await run();
    }
    return file;
  });
}

/**
 * Removes the named netns `name` (unmount + unlink, as `ip netns delete`). Idempotent: a
 * missing netns is success. Interfaces still inside are destroyed by the kernel once no process
 * holds the netns (a veth's host end goes with it). Throws INVALID_ARGUMENT or INTERNAL.
 */
export async function removeNetns(name: string): Promise<void> {
  const file = netnsPath(name);
  await withNameLock(name, async () => {
    if (!(await exists(file))) return;
    try {
      await ip(['netns', 'delete', name], `remove netns ${name}`);
    } catch (err) {
      // Someone else (an operator, another agent run) removed it meanwhile: that is the goal.
      if (!(await exists(file))) return;
      throw err;
    }
  });
}

/** True when a file named `name` exists in the netns run dir. */
export async function netnsExists(name: string): Promise<boolean> {
  return exists(netnsPath(name));
}

/** Names of all named netns on the host (the run dir's entries), sorted; [] when there is no run dir. */
export async function listNetns(): Promise<string[]> {
  try {
    const names = await fs.readdir(NETNS_RUN_DIR);
    return names.filter((n) => NETNS_NAME.test(n)).sort();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new AgentError('INTERNAL', `cannot list the named netns (${errnoCode(err) ?? errorText(err)})`, { cause: err });
  }
}

/**
 * True when `file` is a live netns handle: an nsfs bind mount (a named netns) or a
 * `/proc/<pid>/ns/net` link. A leftover plain file (crash during `ip netns add`) or a missing
 * path is false. CNI DEL passes an empty CNI_NETNS then, as containerd's CRI does for a closed
 * netns, so plugins skip the netns and still release IPAM.
 */
export async function isNetnsHandle(file: string): Promise<boolean> {
  if (file === '') return false;
  try {
    const st = await fs.statfs(file);
    return st.type === NSFS_MAGIC || st.type === PROC_SUPER_MAGIC;
  } catch {
    return false;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw new AgentError('INTERNAL', `cannot check netns ${path.basename(file)} (${errnoCode(err) ?? 'unknown error'})`, { cause: err });
  }
}

function ip(args: readonly string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: IP_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (err === null) {
        resolve();
        return;
      }
      // ip's own words (stderr) may name host paths: they stay in `cause`, for the log.
      const detail = redactHost(stderr.trim() || err.message);
      reject(
        new AgentError(
          'INTERNAL',
          `cannot ${what}: ip ${args[0] ?? ''} ${args[1] ?? ''} failed (exit ${typeof err.code === 'number' ? err.code : 'by signal'})`,
          { cause: new Error(detail) },
        ),
      );
    });
  });
}

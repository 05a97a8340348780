/**
 * Per-worker files in the agent's state dir: `<stateDir>/workers/<id>/` holds resolv.conf and
 * hosts (bind-mounted read-only into the worker) and the worker's stdout+stderr log. One file
 * set per worker, each written atomically (temp + rename), never rewritten under a live worker
 * (the reference agent truncated one shared resolv.conf on every Ensure: docs/go-agent.md#w16).
 */
import { appendFile, chmod, mkdir, open, rm, stat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../atomic-file.js';
import { errnoCode } from '../../errors.js';
import { workerHostname } from '../../worker/naming.js';

export interface WorkerFiles {
  readonly dir: string;
  readonly resolvConf: string;
  readonly hosts: string;
  readonly log: string;
}

export function workersDir(stateDir: string): string {
  return path.join(stateDir, 'workers');
}

export function workerFiles(stateDir: string, id: string): WorkerFiles {
  const dir = path.join(workersDir(stateDir), id);
  return { dir, resolvConf: path.join(dir, 'resolv.conf'), hosts: path.join(dir, 'hosts'), log: path.join(dir, 'output.log') };
}

/**
 * Modes of the state dir's worker entries. A worker's directory holds its log (what the
 * function printed: tenant data) and is root's alone, whatever the mode of AGENT_STATE_DIR
 * or the umask. resolv.conf and hosts stay world-readable: they are bind-mounted into the
 * worker, whose process may run as any uid, and hold nothing secret.
 */
export const WORKER_DIR_MODE = 0o700;
export const WORKER_LOG_MODE = 0o600;
const MOUNTED_FILE_MODE = 0o644;

async function writeAtomic(file: string, content: string): Promise<void> {
  // exactMode: the umask (the systemd unit sets UMask=0077) must not narrow the mode. No fsync:
  // the files are rewritten whenever a worker is made.
  await writeFileAtomic(file, content, { mode: MOUNTED_FILE_MODE, exactMode: true, sync: false });
}

/**
 * Claims `id` in the state dir: creates its directory, failing with EEXIST when it is taken.
 * Ensure does this before it makes anything else, so every netns, CNI attachment and snapshot
 * the agent creates has a directory here until it is gone again: that is how start-up
 * reconciliation tells this agent's leftovers from other agents' objects on the same host.
 */
export async function createWorkerDir(stateDir: string, id: string): Promise<void> {
  await mkdir(workersDir(stateDir), { recursive: true, mode: WORKER_DIR_MODE });
  await mkdir(workerFiles(stateDir, id).dir, { mode: WORKER_DIR_MODE });
}

/**
 * Puts the workers dir back to WORKER_DIR_MODE (start-up): an older agent, an operator or a
 * restored backup may have left it wider.
 */
export async function secureWorkersDir(stateDir: string): Promise<void> {
  await mkdir(workersDir(stateDir), { recursive: true, mode: WORKER_DIR_MODE });
  await chmod(workersDir(stateDir), WORKER_DIR_MODE);
}

export async function workerDirExists(stateDir: string, id: string): Promise<boolean> {
  try {
    return (await stat(workerFiles(stateDir, id).dir)).isDirectory();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Writes resolv.conf and hosts for a worker; returns the paths. The worker's own IP is not
 * known yet when its task is created (CNI ADD runs alongside): `addHostsEntry` adds it later.
 */
export async function writeWorkerFiles(stateDir: string, id: string, dnsServer: string): Promise<WorkerFiles> {
  const f = workerFiles(stateDir, id);
  await mkdir(f.dir, { recursive: true, mode: WORKER_DIR_MODE });
  await writeAtomic(f.resolvConf, `nameserver ${dnsServer}\n`);
  await writeAtomic(f.hosts, '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  // Made here so that its mode is ours: the shim would create it with its own (0644) and
  // only append to an existing file.
  await (await open(f.log, 'a', WORKER_LOG_MODE)).close();
  return f;
}

/**
 * Adds the worker's own `ip hostname` line to its hosts file, in place: the task already
 * bind-mounted this inode, so a rename would not reach the worker. Called before the task
 * starts, when nothing reads the file yet.
 */
export async function addHostsEntry(f: WorkerFiles, ip: string, hostname: string): Promise<void> {
  // workerHostname: the spec's rule (withHostname), whatever cut of the id the caller passes.
  await appendFile(f.hosts, `${ip}\t${workerHostname(hostname)}\n`);
}

/** Removes a worker's files (idempotent). */
export async function removeWorkerFiles(stateDir: string, id: string): Promise<void> {
  // Retries: the log-cap sweeper (worker-log-cap.ts) may create output.log.1 while this runs (ENOTEMPTY).
  await rm(workerFiles(stateDir, id).dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Ids that have a file set (for reconciliation of files left by a crash). */
export async function listWorkerFileIds(stateDir: string): Promise<string[]> {
  try {
    return await readdir(workersDir(stateDir));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

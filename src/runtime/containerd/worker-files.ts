/**
 * Per-worker files in the agent's state dir: `<stateDir>/workers/<id>/` holds resolv.conf and
 * hosts (bind-mounted read-only into the worker) and the worker's stdout+stderr log. One file
 * set per worker, each written atomically (temp + rename), never rewritten under a live worker
 * (the reference agent truncated one shared resolv.conf on every Ensure: W16).
 */
import { appendFile, chmod, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

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

async function writeAtomic(file: string, content: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, content, { mode: 0o644 });
  // Bind-mounted read-only into the worker, whose user may not be root: it must be readable by
  // all whatever the agent's umask (the systemd unit sets UMask=0077), and chmod ignores umask.
  await chmod(tmp, 0o644);
  await rename(tmp, file);
}

/**
 * Claims `id` in the state dir: creates its directory, failing with EEXIST when it is taken.
 * Ensure does this before it makes anything else, so every netns, CNI attachment and snapshot
 * the agent creates has a directory here until it is gone again: that is how start-up
 * reconciliation tells this agent's leftovers from other agents' objects on the same host.
 */
export async function createWorkerDir(stateDir: string, id: string): Promise<void> {
  await mkdir(workersDir(stateDir), { recursive: true, mode: 0o755 });
  await mkdir(workerFiles(stateDir, id).dir, { mode: 0o755 });
}

export async function workerDirExists(stateDir: string, id: string): Promise<boolean> {
  try {
    return (await stat(workerFiles(stateDir, id).dir)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Writes resolv.conf and hosts for a worker; returns the paths. The worker's own IP is not
 * known yet when its task is created (CNI ADD runs alongside): `addHostsEntry` adds it later.
 */
export async function writeWorkerFiles(stateDir: string, id: string, dnsServer: string): Promise<WorkerFiles> {
  const f = workerFiles(stateDir, id);
  await mkdir(f.dir, { recursive: true, mode: 0o755 });
  await writeAtomic(f.resolvConf, `nameserver ${dnsServer}\n`);
  await writeAtomic(f.hosts, '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  return f;
}

/**
 * Adds the worker's own `ip hostname` line to its hosts file, in place: the task already
 * bind-mounted this inode, so a rename would not reach the worker. Called before the task
 * starts, when nothing reads the file yet.
 */
export async function addHostsEntry(f: WorkerFiles, ip: string, hostname: string): Promise<void> {
  await appendFile(f.hosts, `${ip}\t${hostname}\n`);
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
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

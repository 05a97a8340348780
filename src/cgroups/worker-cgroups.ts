/**
 * The worker cgroups of one containerd namespace, read from the cgroup filesystem: every
 * worker's spec puts it at `/<namespace>/<id>` (spec.ts), so on cgroup v1 its directories are
 * `/sys/fs/cgroup/<controller>/<namespace>/<id>` and on v2 `/sys/fs/cgroup/<namespace>/<id>`.
 *
 * Why the agent looks here at all: a Tasks.Create that is cut off (the agent killed, or its
 * deadline hit) can leave runc's `runc init` process behind in such a cgroup with no task
 * that containerd would list (seen with containerd 1.6). Reconciliation kills what runs in
 * cgroups of ids that are no live worker and removes the directories.
 */
import { readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const CGROUP_ROOT = '/sys/fs/cgroup';

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** The directories that hold `/<namespace>`, one per hierarchy (v1: one per mounted controller). */
async function namespaceDirs(namespace: string, root: string): Promise<string[]> {
  if (await exists(path.join(root, 'cgroup.controllers'))) return [path.join(root, namespace)]; // v2
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    // Skip the cpu → cpu,cpuacct style symlinks: each hierarchy once.
    if (e.isDirectory()) out.push(path.join(root, e.name, namespace));
  }
  return out;
}

/** Worker id → its cgroup directories (every hierarchy), for the cgroups that exist now. */
export async function listWorkerCgroups(namespace: string, root = CGROUP_ROOT): Promise<Map<string, string[]>> {
  const byId = new Map<string, string[]>();
  for (const dir of await namespaceDirs(namespace, root)) {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory()) continue;
      const list = byId.get(e.name) ?? [];
      list.push(path.join(dir, e.name));
      byId.set(e.name, list);
    }
  }
  return byId;
}

async function pidsIn(dir: string): Promise<number[]> {
  const text = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l.trim() !== '').map(Number);
}

/**
 * SIGKILLs every process in the cgroup (thawing it first: a frozen process never dies),
 * waits up to `timeoutMs` for it to empty, then removes the directories. Returns how many
 * processes it killed. Throws if the cgroup does not empty in time.
 */
export async function killAndRemoveCgroup(dirs: readonly string[], timeoutMs = 5000): Promise<number> {
  for (const d of dirs) {
    await writeFile(path.join(d, 'freezer.state'), 'THAWED').catch(() => undefined); // v1
    await writeFile(path.join(d, 'cgroup.freeze'), '0').catch(() => undefined); // v2
  }
  const killed = new Set<number>();
  const end = Date.now() + timeoutMs;
  for (;;) {
    const pids = new Set<number>();
    for (const d of dirs) for (const p of await pidsIn(d)) pids.add(p);
    if (pids.size === 0) break;
    if (Date.now() > end) throw new Error(`cgroup ${dirs[0] ?? ''} still has processes ${[...pids].join(' ')} after SIGKILL`);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
        killed.add(p);
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const d of dirs) {
    // Children first (runc makes none, but a worker may on v2 with delegation).
    const children = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const c of children) if (c.isDirectory()) await rmdir(path.join(d, c.name)).catch(() => undefined);
    await rmdir(d).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
  }
  return killed.size;
}

/**
 * Where worker cgroups live, and the worker cgroups of one containerd namespace as read from the
 * cgroup filesystem. With the cgroupfs driver (AGENT_CGROUP_DRIVER=cgroupfs, the default) a
 * worker's spec puts it at `/<namespace>/<id>`, so on cgroup v1 its directories are
 * `/sys/fs/cgroup/<controller>/<namespace>/<id>` and on v2 `/sys/fs/cgroup/<namespace>/<id>`.
 * With the systemd driver runc asks systemd for a scope unit `<namespace>-<id>.scope` in
 * `system.slice` (the spec's path is `system.slice:<namespace>:<id>`), so the directory is
 * `system.slice/<namespace>-<id>.scope` under each hierarchy.
 *
 * Why the agent looks here at all: a Tasks.Create that is cut off (the agent killed, or its
 * deadline hit) can leave runc's `runc init` process behind in such a cgroup with no task
 * that containerd would list (seen with containerd 1.6). Reconciliation kills what runs in
 * cgroups of ids that are no live worker and removes the directories.
 */
import { readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../errors.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** Who creates a worker's cgroup: runc itself (cgroupfs) or systemd through runc. */
export type CgroupDriver = 'cgroupfs' | 'systemd';

/** The slice that holds worker scopes under the systemd driver. */
const SYSTEMD_SLICE = 'system.slice';

/** The OCI spec's `linux.cgroupsPath` of a worker. */
export function workerCgroupsPath(driver: CgroupDriver, namespace: string, id: string): string {
  return driver === 'systemd' ? `${SYSTEMD_SLICE}:${namespace}:${id}` : `/${namespace}/${id}`;
}

/** The directory (relative to a hierarchy root) that holds the workers, and the id in a child's name. */
function layout(driver: CgroupDriver, namespace: string): { parent: string; idOf: (name: string) => string | undefined } {
  if (driver === 'cgroupfs') return { parent: namespace, idOf: (name) => name };
  const prefix = `${namespace}-`;
  return {
    parent: SYSTEMD_SLICE,
    idOf: (name) =>
      name.startsWith(prefix) && name.endsWith('.scope') && name.length > prefix.length + 6
        ? name.slice(prefix.length, -'.scope'.length)
        : undefined,
  };
}

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

/** `parent` under every hierarchy (v2: one; v1: one per mounted controller). */
async function hierarchyDirs(parent: string, root: string): Promise<string[]> {
  if (await exists(path.join(root, 'cgroup.controllers'))) return [path.join(root, parent)]; // v2
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true }).catch(() => [])) {
    // Skip the cpu → cpu,cpuacct style symlinks: each hierarchy once.
    if (e.isDirectory()) out.push(path.join(root, e.name, parent));
  }
  return out;
}

/** Worker id → its cgroup directories (every hierarchy), for the cgroups that exist now. */
export async function listWorkerCgroups(
  namespace: string,
  root = CGROUP_ROOT,
  driver: CgroupDriver = 'cgroupfs',
): Promise<Map<string, string[]>> {
  const { parent, idOf } = layout(driver, namespace);
  const byId = new Map<string, string[]>();
  for (const dir of await hierarchyDirs(parent, root)) {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const id = e.isDirectory() ? idOf(e.name) : undefined;
      if (id === undefined) continue;
      const list = byId.get(id) ?? [];
      list.push(path.join(dir, e.name));
      byId.set(id, list);
    }
  }
  return byId;
}

async function pidsIn(dir: string): Promise<number[]> {
  const text = await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
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
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }
  return killed.size;
}

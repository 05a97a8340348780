/**
 * Counts everything a worker can leave behind, so tests can assert "nothing leaked" after a
 * failure, a cancel, a destroy or a crash: containers, tasks, container snapshots and leases in
 * the agent's containerd namespace; netns; veths on the test bridge; host-local IP
 * reservations; CNI cache entries; per-worker state dirs; mounts under the agent's state dir
 * (the read-only snapshot mounts of image user lookups).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { ContainerdClient } from '../../src/runtime/containerd/client.js';
import { listSnapshotKeys } from './containerd.js';
import { listWorkerCgroups } from '../../src/cgroups/worker-cgroups.js';
import { mountPointsUnder } from '../../src/runtime/containerd/rootfs/readonly-mount.js';

export interface LeakReport {
  containers: string[];
  tasks: string[];
  /** Snapshots other than committed image layers (keys not starting with sha256:). */
  snapshots: string[];
  leases: string[];
  netns: string[];
  veths: string[];
  ipReservations: string[];
  cniCache: string[];
  workerDirs: string[];
  /** Worker cgroups (ids) under the namespace's cgroup parent: a live or leaked process's home. */
  cgroups: string[];
  /** Mount points under the state dir (image user lookups mount snapshots there for a moment). */
  mounts: string[];
}

export interface LeakScope {
  readonly client: ContainerdClient;
  readonly snapshotter: string;
  /** Prefix of worker ids (= netns names) this test's agent creates. */
  readonly idPrefix: string;
  readonly bridge: string;
  /** host-local dataDir and network name: reservations live in <netDir>/<networkName>/. */
  readonly netDir: string;
  readonly networkName: string;
  readonly stateDir: string;
}

function dirEntries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

export async function findLeaks(s: LeakScope): Promise<LeakReport> {
  const c = s.client;
  const containers = (await c.call('containers', 'List', { filters: [] })).containers.map((x) => x.id);
  const tasks = (await c.call('tasks', 'List', { filter: '' })).tasks.map((t) => t.id);
  const snapshots = (await listSnapshotKeys(c, s.snapshotter)).filter((k) => !k.startsWith('sha256:'));
  const leases = (await c.call('leases', 'List', { filters: [] })).leases.map((l) => l.id);
  const netns = dirEntries('/run/netns').filter((n) => n.startsWith(s.idPrefix));
  let veths: string[] = [];
  try {
    const out = execFileSync('ip', ['-o', 'link', 'show', 'master', s.bridge], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    veths = out
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => l.split(':')[1]?.trim() ?? l);
  } catch {
    veths = []; // no bridge yet: nothing attached
  }
  const ipReservations = dirEntries(path.join(s.netDir, s.networkName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const cniCache = dirEntries(path.join(s.stateDir, 'cni-cache', 'results'));
  const workerDirs = dirEntries(path.join(s.stateDir, 'workers'));
  const cgroups = [...(await listWorkerCgroups(c.namespace)).keys()];
  const mounts = await mountPointsUnder(s.stateDir);
  return { containers, tasks, snapshots, leases, netns, veths, ipReservations, cniCache, workerDirs, cgroups, mounts };
}

/** Total number of leaked objects. */
export function leakCount(r: LeakReport): number {
  let n = 0;
  for (const v of Object.values(r) as string[][]) n += v.length;
  return n;
}

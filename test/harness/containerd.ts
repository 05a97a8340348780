/**
 * A private, real containerd for tests: its own config, root, state and sockets under a temp
 * dir, never the host's defaults. `stop()` removes every task, container, image, lease,
 * snapshot and namespace it holds, kills leftover shims, unmounts and deletes the temp dir —
 * also after a failed test (register `t.after(() => ctd.stop())` before using it).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import { killAndRemoveCgroup, listWorkerCgroups } from '../../src/cgroups/worker-cgroups.js';
import { startDaemon, stopDaemon, waitFor, type Daemon } from './process.js';

export interface ContainerdInstance {
  readonly dir: string;
  readonly socket: string;
  readonly root: string;
  readonly state: string;
  /** Stops the daemon (SIGTERM) without cleaning; workers' shims keep running. */
  pause(): Promise<void>;
  /** SIGKILLs the daemon, as a crash would. */
  crash(): Promise<void>;
  /** Starts the daemon again on the same paths. */
  restart(): Promise<void>;
  /** Removes everything the daemon holds, stops it and deletes the temp dir. Idempotent. */
  stop(): Promise<void>;
  readonly running: boolean;
}

function config(dir: string): string {
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"
`;
}

/** Starts containerd and waits until it answers Version. */
export async function startContainerd(): Promise<ContainerdInstance> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-ctd-'));
  const socket = path.join(dir, 'containerd.sock');
  writeFileSync(path.join(dir, 'config.toml'), config(dir));
  let daemon: Daemon | undefined;
  let stopped = false;

  const launch = async (): Promise<void> => {
    daemon = startDaemon('containerd', ['--config', path.join(dir, 'config.toml')], path.join(dir, 'containerd.log'));
    const probe = new ContainerdClient({ socket, namespace: 'default' });
    try {
      await waitFor(
        'containerd to answer',
        async () => {
          if (daemon?.child.exitCode !== null) throw new Error(`containerd exited: ${tail(path.join(dir, 'containerd.log'))}`);
          await probe.getVersion({ deadlineMs: 1000 });
          return true;
        },
        20_000,
        100,
      );
    } finally {
      probe.close();
    }
  };
  await launch();

  const inst: ContainerdInstance = {
    dir,
    socket,
    root: path.join(dir, 'root'),
    state: path.join(dir, 'state'),
    get running() {
      return daemon?.child.exitCode === null && daemon.child.signalCode === null;
    },
    async pause() {
      if (daemon) await stopDaemon(daemon);
    },
    async crash() {
      if (daemon && inst.running) {
        daemon.child.kill('SIGKILL');
        await daemon.exited;
      }
    },
    async restart() {
      if (inst.running) throw new Error('containerd is still running');
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        if (!inst.running) await launch();
        await wipe(socket);
      } catch {
        // best effort: the process-level cleanup below still runs
      }
      if (daemon) await stopDaemon(daemon);
      killShims(socket);
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return inst;
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-5).join('\n');
  } catch {
    return '';
  }
}

/** Deletes everything in every namespace of this daemon, then the namespaces themselves. */
export async function wipe(socket: string): Promise<void> {
  const admin = new ContainerdClient({ socket, namespace: 'default' });
  try {
    const nsRes = await admin.call('namespaces', 'List', { filter: '' });
    for (const { name } of nsRes.namespaces) {
      const c = new ContainerdClient({ socket, namespace: name });
      try {
        await wipeNamespace(c);
      } finally {
        c.close();
      }
      // Processes no task accounts for (a cut-off task create leaves `runc init` behind).
      for (const [, dirs] of await listWorkerCgroups(name)) await killAndRemoveCgroup(dirs).catch(() => undefined);
      removeNamespaceCgroups(name);
    }
  } finally {
    admin.close();
  }
}

/** Removes tasks, containers, images, leases and snapshots of one namespace, then deletes it. */
export async function wipeNamespace(c: ContainerdClient): Promise<void> {
  const ignore = (): void => undefined;
  const tasks = await c.call('tasks', 'List', { filter: '' });
  for (const t of tasks.tasks) {
    await c.call('tasks', 'Resume', { container_id: t.id }).catch(ignore);
    await c.call('tasks', 'Kill', { container_id: t.id, signal: 9, all: true }).catch(ignore);
    await waitFor(
      `task ${t.id} to stop`,
      async () => {
        const g = await c.call('tasks', 'Get', { container_id: t.id });
        return g.process?.status === 'STOPPED' || g.process?.status === 'CREATED';
      },
      10_000,
    ).catch(ignore);
    await c.call('tasks', 'Delete', { container_id: t.id }).catch(ignore);
  }
  const containers = await c.call('containers', 'List', { filters: [] });
  for (const ct of containers.containers) {
    await c.call('containers', 'Delete', { id: ct.id }).catch(ignore);
  }
  const images = await c.call('images', 'List', { filters: [] });
  for (const im of images.images) {
    await c.call('images', 'Delete', { name: im.name, sync: false }).catch(ignore);
  }
  const leases = await c.call('leases', 'List', { filters: [] });
  for (const l of leases.leases) {
    await c.call('leases', 'Delete', { id: l.id, sync: false }).catch(ignore);
  }
  for (const snapshotter of ['overlayfs', 'native']) {
    // Remove children before parents: retry the remaining keys until a pass removes nothing.
    for (let pass = 0; pass < 20; pass++) {
      const keys = await listSnapshotKeys(c, snapshotter).catch(() => [] as string[]);
      if (keys.length === 0) break;
      let removed = 0;
      for (const key of keys) {
        await c.call('snapshots', 'Remove', { snapshotter, key }).then(() => removed++, ignore);
      }
      if (removed === 0) break;
    }
  }
  await c.call('namespaces', 'Delete', { name: c.namespace }, { namespace: c.namespace }).catch(ignore);
}

/** Every snapshot key of one snapshotter in the client's namespace. */
export function listSnapshotKeys(c: ContainerdClient, snapshotter: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const keys: string[] = [];
    const stream = c.svc.snapshots.List({ snapshotter, filters: [] }, c.metadata());
    stream.on('data', (res: { info: { name: string }[] }) => {
      for (const i of res.info) keys.push(i.name);
    });
    stream.on('error', reject);
    stream.on('end', () => {
      resolve(keys);
    });
  });
}

/** runc leaves the per-namespace parent cgroup in every v1 hierarchy (docs/containerd.md#deleting-containers). */
export function removeNamespaceCgroups(namespace: string): void {
  const base = '/sys/fs/cgroup';
  if (!existsSync(base)) return;
  for (const ctl of readdirSync(base)) {
    const p = path.join(base, ctl, namespace);
    if (existsSync(p)) {
      try {
        rmdirSync(p);
      } catch {
        // not empty (a leak a test should catch) or not ours to remove
      }
    }
  }
  const v2 = path.join(base, namespace);
  if (existsSync(v2)) {
    try {
      rmdirSync(v2);
    } catch {
      // see above
    }
  }
}

/** Kills shims started for this daemon (they are detached and outlive it by design). */
function killShims(socket: string): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('containerd-shim') && cmd.includes(socket)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // process gone
    }
  }
}

/** Lazily unmounts anything still mounted under `dir` (overlay rootfs, shm), deepest first. */
export function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p === dir || p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

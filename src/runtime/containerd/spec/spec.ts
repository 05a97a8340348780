/**
 * The OCI runtime spec of a worker: containerd's client defaults (oci.populateDefaultUnixSpec,
 * captured in docs/containerd.md#default-spec) plus small, ordered mutators, each testable alone.
 * `buildWorkerSpec` applies them in the order the contract needs (image config, then request
 * env so the request wins, then limits and the worker's own files and netns).
 */
import { AgentError } from '../../../errors.js';
import { defaultSeccompProfile } from '../../../worker/seccomp.js';
import {
  cpuSharesForMemory,
  cpuWeightForShares,
  tmpfsOptions,
  DEFAULT_CAPABILITIES,
  WORKER_NOFILE,
  WORKER_PIDS_LIMIT,
} from '../../../worker/limits.js';
import { workerHostname } from '../../../worker/naming.js';
import type { CgroupVersion } from '../../../cgroups/version.js';
import { workerCgroupsPath, type CgroupDriver } from '../../../cgroups/worker-cgroups.js';
import type { ImageRunConfig, OciMount, OciSpec, OciUser } from './types.js';

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

type SpecMutator = (spec: OciSpec) => void;

/** containerd's default Unix spec for container `id` in containerd namespace `namespace`. */
export function defaultSpec(namespace: string, id: string): OciSpec {
  const caps = [...DEFAULT_CAPABILITIES];
  return {
    ociVersion: '1.0.2-dev',
    process: {
      user: { uid: 0, gid: 0, additionalGids: [0] },
      args: [],
      env: [DEFAULT_PATH],
      cwd: '/',
      capabilities: { bounding: [...caps], effective: [...caps], permitted: [...caps] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: WORKER_NOFILE, soft: WORKER_NOFILE }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs' },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: {
      resources: {
        devices: [
          { allow: false, access: 'rwm' },
          ...[
            [1, 3],
            [1, 8],
            [1, 7],
            [5, 0],
            [1, 5],
            [1, 9],
            [5, 1],
            [5, 2],
          ].map(([major, minor]) => ({ allow: true, type: 'c', major: major!, minor: minor!, access: 'rwm' })),
          { allow: true, type: 'c', major: 136, access: 'rwm' },
        ],
      },
      cgroupsPath: `/${namespace}/${id}`,
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      // containerd 1.6's list plus /sys/devices/virtual/powercap, which containerd ≥ 1.7 and
      // docker also mask: its RAPL energy counters leak other tenants' activity (CVE-2020-8694).
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/sys/devices/virtual/powercap',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/** Sets `KEY=value` entries, replacing an existing key or appending (oci.WithEnv). */
export function withEnv(entries: readonly string[]): SpecMutator {
  return (spec) => {
    for (const entry of entries) {
      const key = entry.slice(0, entry.indexOf('=') + 1);
      const i = spec.process.env.findIndex((e) => e.startsWith(key));
      if (i >= 0) spec.process.env[i] = entry;
      else spec.process.env.push(entry);
    }
  };
}

/**
 * Applies the image config (oci.WithImageConfig): args = Entrypoint ++ Cmd, env = image Env (or
 * the default PATH), cwd, and the user. `user` is the already-resolved uid/gid (see users.ts).
 */
export function withImageConfig(config: ImageRunConfig, user: OciUser): SpecMutator {
  return (spec) => {
    const args = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
    if (args.length === 0) throw new AgentError('INVALID_ARGUMENT', 'the image has neither Entrypoint nor Cmd: nothing to run');
    spec.process.args = args;
    const env = config.Env ?? [];
    spec.process.env = env.length > 0 ? [] : [DEFAULT_PATH];
    withEnv(env)(spec);
    spec.process.cwd = config.WorkingDir && config.WorkingDir !== '' ? config.WorkingDir : '/';
    spec.process.user = user;
  };
}

/**
 * Memory limit in bytes. On cgroup v2 `swap` (memory + swap, as OCI counts it) equals the limit,
 * so runc writes memory.swap.max = 0: otherwise it stays "max" and a worker on a host with swap
 * could page out past its limit. On v1 no swap limit: it needs swap accounting (memory.memsw),
 * which many hosts lack, and runc would refuse the spec there.
 */
export function withMemoryLimit(bytes: number, cgroupVersion: CgroupVersion = 1): SpecMutator {
  return (spec) => {
    spec.linux.resources.memory = cgroupVersion === 2 ? { limit: bytes, swap: bytes } : { limit: bytes };
  };
}

/** CPU by memory size: cpu.shares, and on cgroup v2 an explicit cpu.weight (see cpuWeightForShares). */
export function withCpuSharesForMemory(memoryMb: number, cgroupVersion: CgroupVersion = 1): SpecMutator {
  return (spec) => {
    const shares = cpuSharesForMemory(memoryMb);
    spec.linux.resources.cpu = { shares };
    // Never on v1: runc rejects `unified` there.
    if (cgroupVersion === 2)
      spec.linux.resources.unified = { ...spec.linux.resources.unified, 'cpu.weight': String(cpuWeightForShares(shares)) };
  };
}

export function withPidsLimit(limit: number): SpecMutator {
  return (spec) => {
    spec.linux.resources.pids = { limit };
  };
}

/** Joins an existing network namespace (the worker's named netns, already set up by CNI). */
export function withNetnsPath(path: string): SpecMutator {
  return (spec) => {
    spec.linux.namespaces = spec.linux.namespaces.map((ns) => (ns.type === 'network' ? { type: 'network', path } : ns));
  };
}

/** Read-only bind mounts of per-worker files (resolv.conf, hosts) over the image's. */
export function withReadonlyFiles(files: readonly { hostPath: string; containerPath: string }[]): SpecMutator {
  return (spec) => {
    for (const f of files) {
      const m: OciMount = { destination: f.containerPath, type: 'bind', source: f.hostPath, options: ['rbind', 'ro'] };
      spec.mounts = spec.mounts.filter((x) => x.destination !== f.containerPath);
      spec.mounts.push(m);
    }
  };
}

/**
 * Lambda's filesystem model: the image is read-only and `/tmp` is the one writable place, a
 * tmpfs of `tmpSizeMb`. tmpfs pages are charged to the memory cgroup of the process that
 * writes them, so what a worker keeps in /tmp counts against its own memory limit and can
 * never fill the host's disk. `readonlyRootfs: false` is the operator's opt-out for images
 * that write elsewhere; /tmp stays a bounded tmpfs either way.
 */
export function withFilesystem(opts: { readonly readonlyRootfs: boolean; readonly tmpSizeMb: number }): SpecMutator {
  return (spec) => {
    spec.root.readonly = opts.readonlyRootfs;
    spec.mounts = spec.mounts.filter((m) => m.destination !== '/tmp');
    spec.mounts.push({ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: tmpfsOptions(opts.tmpSizeMb) });
  };
}

/** The worker's hostname: worker/naming.ts workerHostname (the hosts file uses the same rule). */
export function withHostname(hostname: string): SpecMutator {
  return (spec) => {
    spec.hostname = workerHostname(hostname);
  };
}

/** containerd's default seccomp profile for the spec's bounding capabilities. */
export function withDefaultSeccomp(): SpecMutator {
  return (spec) => {
    spec.linux.seccomp = defaultSeccompProfile(spec.process.capabilities.bounding);
  };
}

export interface WorkerSpecInput {
  readonly namespace: string;
  readonly id: string;
  readonly image: ImageRunConfig;
  readonly user: OciUser;
  /** Request env, `KEY=value`, applied after the image's so the request wins. */
  readonly env: readonly string[];
  readonly memoryMb: number;
  /** The host's cgroup hierarchy (v2 gets cpu.weight and a swap limit). */
  readonly cgroupVersion: CgroupVersion;
  /** AGENT_CGROUP_DRIVER: decides the form of linux.cgroupsPath. */
  readonly cgroupDriver: CgroupDriver;
  /** Root filesystem read-only (AGENT_WORKER_READONLY_ROOTFS) and the size of /tmp. */
  readonly readonlyRootfs: boolean;
  readonly tmpSizeMb: number;
  readonly netnsPath: string;
  readonly resolvConfPath: string;
  readonly hostsPath: string;
  readonly hostname: string;
}

/** The complete spec of one worker. */
export function buildWorkerSpec(input: WorkerSpecInput): OciSpec {
  const spec = defaultSpec(input.namespace, input.id);
  spec.linux.cgroupsPath = workerCgroupsPath(input.cgroupDriver, input.namespace, input.id);
  const steps: SpecMutator[] = [
    withImageConfig(input.image, input.user),
    withEnv(input.env),
    withMemoryLimit(input.memoryMb * 1024 * 1024, input.cgroupVersion),
    withCpuSharesForMemory(input.memoryMb, input.cgroupVersion),
    withPidsLimit(WORKER_PIDS_LIMIT),
    withNetnsPath(input.netnsPath),
    withFilesystem({ readonlyRootfs: input.readonlyRootfs, tmpSizeMb: input.tmpSizeMb }),
    withReadonlyFiles([
      { hostPath: input.resolvConfPath, containerPath: '/etc/resolv.conf' },
      { hostPath: input.hostsPath, containerPath: '/etc/hosts' },
    ]),
    withHostname(input.hostname),
    withDefaultSeccomp(),
  ];
  for (const step of steps) step(spec);
  return spec;
}

/**
 * Worker resource limits shared by every runtime (containerd and docker apply the same rule):
 * memory from the request, CPU weight by memory size, pids and open-file limits, the
 * capability set and the /tmp tmpfs. Runtime-neutral: containerd's spec and docker's create
 * body both read these.
 */
import { AgentError } from '../errors.js';

/** The Lambda variable that carries the function's memory size in MiB. */
export const MEMORY_ENV = 'AWS_LAMBDA_FUNCTION_MEMORY_SIZE';
export const MIN_MEMORY_MB = 16;
export const MAX_MEMORY_MB = 256 * 1024;

/** Memory limit in MiB from the request env, else the default. Bad values → INVALID_ARGUMENT. */
export function memoryMbFor(env: Readonly<Record<string, string>>, defaultMb: number): number {
  const raw = env[MEMORY_ENV];
  if (raw === undefined) return defaultMb;
  const v = raw.trim();
  if (!/^\d+$/.test(v) || Number(v) < MIN_MEMORY_MB || Number(v) > MAX_MEMORY_MB) {
    throw new AgentError(
      'INVALID_ARGUMENT',
      `${MEMORY_ENV} must be a whole number of MiB from ${MIN_MEMORY_MB} to ${MAX_MEMORY_MB}, got ${JSON.stringify(raw)}`,
    );
  }
  return Number(v);
}

/**
 * A worker's capabilities: containerd's 14 defaults (oci.defaultUnixCaps) less CAP_NET_RAW.
 * Raw sockets let a worker forge ARP and IP packets on the shared bridge (spoof another
 * worker or the gateway, sniff plaintext invocations); a function needs none of that, and
 * ping works without it through the kernel's unprivileged ICMP sockets where enabled.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];
/** Capabilities taken out of containerd's default set (docker's CapDrop uses the same list). */
export const DROPPED_CAPABILITIES: readonly string[] = ['CAP_NET_RAW'];

/** RLIMIT_NOFILE of every worker (docs/contract.md#ensurecontainer). */
export const WORKER_NOFILE = 1024;
/** Upper bound on processes + threads in one worker: stops fork bombs (docs/go-agent.md#w19). */
export const WORKER_PIDS_LIMIT = 1024;
/** Lambda gives one full vCPU at 1,769 MB; cpu.shares scale the same way (1024 = one CPU's weight). */
const LAMBDA_MB_PER_VCPU = 1769;

/** cpu.shares for a memory size: proportional, as Lambda allots CPU by memory size. */
export function cpuSharesForMemory(memoryMb: number): number {
  return Math.min(262_144, Math.max(2, Math.round((memoryMb / LAMBDA_MB_PER_VCPU) * 1024)));
}

/**
 * cgroup v2 cpu.weight for cpu.shares. runc itself converts shares to a weight, but runc ≤ 1.3.1
 * does it linearly (1024 → 39: a worker then weighs less than any systemd service at the
 * default 100) and runc ≥ 1.3.2 and crun log-quadratically (1024 → 100). The agent sends the
 * weight itself, with the log-quadratic formula, so the same memory size gives the same CPU
 * weight whatever runtime binary runs it: 2 → 1, 1024 → 100, 262144 → 10000.
 */
export function cpuWeightForShares(shares: number): number {
  if (shares <= 2) return 1;
  if (shares >= 262_144) return 10_000;
  const l = Math.log2(shares);
  const exponent = (l * l + 125 * l) / 612 - 7 / 34;
  return Math.min(10_000, Math.max(1, Math.ceil(10 ** exponent)));
}

/**
 * Mount options of a worker's /tmp: world-writable with the sticky bit, no devices or setuid.
 * `exec` is explicit: functions run binaries they unpack into /tmp (Lambda allows it), and
 * dockerd would otherwise add its own `noexec` default, so both runtimes agree.
 */
export function tmpfsOptions(sizeMb: number): string[] {
  return ['nosuid', 'nodev', 'exec', 'mode=1777', `size=${sizeMb}m`];
}

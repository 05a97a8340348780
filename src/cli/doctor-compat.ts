/**
 * `esb-agent doctor`'s compatibility check: the cgroup hierarchy and driver, containerd's,
 * runc's (or CONTAINERD_RUNC_BINARY's) and the CNI plugins' versions, and where that
 * combination stands in the compatibility matrix (docs: tested, audited only, unsupported).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { detectCgroupVersion, type CgroupVersion } from '../cgroups/version.js';
import type { Config } from '../config/config.js';
import { findPlugin } from '../cni/exec.js';
import { errorText } from '../errors.js';
import { ContainerdClient } from '../runtime/containerd/client.js';

const execFileP = promisify(execFile);
const TIMEOUT_MS = 5000;

export type MatrixStatus = 'tested' | 'audited' | 'untested' | 'unsupported';

export interface StackVersions {
  readonly cgroupVersion: CgroupVersion;
  /** `1.6.20`, `v2.1.9`, `1.7.24~ds1` … as the component reports it. */
  readonly containerd: string | undefined;
  readonly runc: string | undefined;
}

/** [major, minor] of a version string such as `v1.7.24~ds1`; undefined when unreadable. */
export function majorMinor(v: string | undefined): [number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)/.exec(v ?? '');
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/**
 * Where a combination stands. Tested: the hierarchies and versions the project's CI runs
 * (cgroup v1 + containerd 1.6 + runc 1.1 on the host; cgroup v2 + containerd 1.7 or 2.1 +
 * runc 1.1 in the guest job). Audited only: containerd 2.0 and runc 1.2–1.4 (their APIs and
 * behaviour were read, not run). Unsupported: containerd before 1.6.
 */
export function classify(v: StackVersions): { status: MatrixStatus; why: string } {
  const ctd = majorMinor(v.containerd);
  const runc = majorMinor(v.runc);
  if (!ctd) return { status: 'untested', why: 'containerd version unknown' };
  if (ctd[0] < 1 || (ctd[0] === 1 && ctd[1] < 6)) return { status: 'unsupported', why: `containerd ${v.containerd} is older than 1.6` };
  const ctdText = `${ctd[0]}.${ctd[1]}`;
  const runcText = runc ? `${runc[0]}.${runc[1]}` : 'unknown';
  const tested: Record<CgroupVersion, readonly string[]> = { 1: ['1.6'], 2: ['1.7', '2.1'] };
  if (runcText === '1.1' && tested[v.cgroupVersion].includes(ctdText)) {
    return { status: 'tested', why: `cgroup v${v.cgroupVersion} + containerd ${ctdText} + runc 1.1 is tested in CI` };
  }
  const auditedCtd = ['1.6', '1.7', '2.0', '2.1'].includes(ctdText);
  const auditedRunc = ['1.1', '1.2', '1.3', '1.4'].includes(runcText);
  if (auditedCtd && auditedRunc)
    return { status: 'audited', why: `cgroup v${v.cgroupVersion} + containerd ${ctdText} + runc ${runcText} was audited, not tested` };
  return { status: 'untested', why: `cgroup v${v.cgroupVersion} + containerd ${ctdText} + runc ${runcText} is outside the matrix` };
}

async function containerdVersion(config: Config): Promise<string | undefined> {
  const client = new ContainerdClient({ socket: config.containerd.socket, namespace: config.containerd.namespace });
  try {
    await client.waitForReady(TIMEOUT_MS);
    return (await client.getVersion({ deadlineMs: TIMEOUT_MS })).version;
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

/** `runc --version` (or the configured binary's): the first version-looking word. */
async function runtimeBinaryVersion(binary: string): Promise<string | undefined> {
  try {
    const { stdout } = await execFileP(binary, ['--version'], { timeout: TIMEOUT_MS });
    return /version (\S+)/.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
}

/** The CNI bridge plugin's own report: its release (often "unknown" in distribution builds) and protocol versions. */
async function cniPluginVersions(binDirs: readonly string[]): Promise<string> {
  try {
    const bridge = await findPlugin('bridge', binDirs);
    // Run without CNI_COMMAND, a plugin prints its "about" text on stderr and exits non-zero.
    const out = await execFileP(bridge, [], { timeout: TIMEOUT_MS, env: {} }).then(
      (r) => r.stdout + r.stderr,
      (err: unknown) => {
        const e = err as { stdout?: string; stderr?: string };
        return `${e.stdout ?? ''}${e.stderr ?? ''}`;
      },
    );
    let release = /plugin (?:version )?(v?\d\S*)/.exec(out)?.[1];
    // Distribution builds often say "version unknown": the package knows.
    release ??= await execFileP('dpkg-query', ['-W', '-f=${Version}', 'containernetworking-plugins'], { timeout: TIMEOUT_MS }).then(
      (r) => `${r.stdout.trim()} (Debian package)`,
      () => 'unknown',
    );
    const protocols = /versions supported: (.+)/.exec(out)?.[1]?.trim() ?? 'unknown';
    return `CNI plugins ${release} (protocol ${protocols})`;
  } catch (err) {
    return `CNI plugins not found (${errorText(err)})`;
  }
}

export interface CompatReport {
  readonly status: 'OK' | 'WARN' | 'FAIL';
  readonly message: string;
  readonly fix?: string;
}

/** The compat check for the containerd runtime. */
export async function checkCompat(config: Config, cgroupRoot = '/sys/fs/cgroup'): Promise<CompatReport> {
  const cgroupVersion = detectCgroupVersion(cgroupRoot);
  const binary = config.containerd.runcBinary ?? 'runc';
  const [ctd, runc, cni] = await Promise.all([
    containerdVersion(config),
    runtimeBinaryVersion(binary),
    cniPluginVersions(config.cni.binDirs),
  ]);
  const { status, why } = classify({ cgroupVersion, containerd: ctd, runc });
  const message = `cgroup v${cgroupVersion}, driver ${config.containerd.cgroupDriver}; containerd ${ctd ?? 'unreachable'}; ${binary} ${runc ?? 'unknown'}; ${cni} — ${status}: ${why}`;
  if (config.containerd.cgroupDriver === 'systemd' && !(await isSystemdRunning())) {
    return { status: 'FAIL', message, fix: 'AGENT_CGROUP_DRIVER=systemd needs systemd as the init system; use cgroupfs' };
  }
  if (status === 'unsupported') return { status: 'FAIL', message, fix: 'upgrade containerd to 1.7 or 2.1' };
  if (status === 'tested') return { status: 'OK', message };
  return {
    status: 'WARN',
    message,
    fix: 'run the integration suite on this combination (docs: compatibility matrix), or use a tested one',
  };
}

async function isSystemdRunning(): Promise<boolean> {
  try {
    return (await readFile('/proc/1/comm', 'utf8')).trim() === 'systemd';
  } catch {
    return false;
  }
}

/**
 * containerd's default seccomp profile (`contrib/seccomp.DefaultProfile`) as OCI spec JSON,
 * less io_uring (DENIED_SYSCALLS). The unconditional allow-list is vendored data
 * (seccomp-syscalls.gen.ts); the handful of conditional rules below follow the same source for
 * the capabilities a worker can have. Both runtimes send this profile (docker as a
 * `seccomp=<json>` security option), so a worker is filtered alike on either.
 */
import { DEFAULT_ALLOWED_SYSCALLS } from './seccomp-syscalls.gen.js';

/** The seccomp part of an OCI runtime spec (`linux.seccomp`), the shape both runtimes send. */
export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: 'SCMP_CMP_EQ' | 'SCMP_CMP_MASKED_EQ';
}

export interface OciSeccompRule {
  names: string[];
  action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
  errnoRet?: number;
  args?: OciSeccompArg[];
}

export interface OciSeccomp {
  defaultAction: 'SCMP_ACT_ERRNO';
  architectures: string[];
  syscalls: OciSeccompRule[];
}

const ARCHES: Readonly<Record<string, readonly string[]>> = {
  x64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  arm64: ['SCMP_ARCH_ARM', 'SCMP_ARCH_AARCH64'],
};

const ARCH_SYSCALLS: Readonly<Record<string, readonly string[]>> = {
  x64: ['arch_prctl', 'modify_ldt'],
  arm64: ['arm_fadvise64_64', 'arm_sync_file_range', 'sync_file_range2', 'breakpoint', 'cacheflush', 'set_tls'],
};

/** Extra syscalls a capability unlocks (only those a worker may be given). */
const CAP_SYSCALLS: Readonly<Record<string, readonly string[]>> = {
  CAP_DAC_READ_SEARCH: ['open_by_handle_at'],
  CAP_SYS_CHROOT: ['chroot'],
  CAP_SYS_TIME: ['settimeofday', 'stime', 'clock_settime', 'clock_settime64'],
  CAP_SYS_NICE: ['get_mempolicy', 'mbind', 'set_mempolicy'],
};

/** Namespace flags a process without CAP_SYS_ADMIN may not pass to clone(2). */
const CLONE_NAMESPACE_FLAGS =
  0x00020000 /* NEWNS */ |
  0x04000000 /* NEWUTS */ |
  0x08000000 /* NEWIPC */ |
  0x10000000 /* NEWUSER */ |
  0x20000000 /* NEWPID */ |
  0x40000000 /* NEWNET */ |
  0x02000000; /* NEWCGROUP */
const ENOSYS = 38;

/** personality(2) values glibc and runtimes use (PER_LINUX, UNAME26, PER_LINUX32 ...). */
const PERSONALITY_VALUES = [0x0, 0x0008, 0x20000, 0x20008, 0xffffffff];

/**
 * Syscalls taken out of containerd's allow-list. io_uring has been the source of a long run of
 * kernel privilege escalations and bypasses seccomp's per-syscall filtering for the I/O it
 * submits; Docker's default profile dropped it for the same reasons (moby 25.0). A worker that
 * calls io_uring_setup gets EPERM (the profile's default action) and libraries fall back to
 * ordinary syscalls.
 */
export const DENIED_SYSCALLS: readonly string[] = ['io_uring_setup', 'io_uring_enter', 'io_uring_register'];

/** The default profile for a process whose bounding set is `capabilities`, on `arch`. */
export function defaultSeccompProfile(capabilities: readonly string[], arch: string = process.arch): OciSeccomp {
  const allowed = DEFAULT_ALLOWED_SYSCALLS.filter((s) => !DENIED_SYSCALLS.includes(s));
  const syscalls: OciSeccompRule[] = [{ names: allowed, action: 'SCMP_ACT_ALLOW', args: [] }];
  for (const value of PERSONALITY_VALUES) {
    syscalls.push({ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }] });
  }
  // ptrace is allowed on kernels ≥ 4.8, where seccomp can no longer be bypassed through it.
  syscalls.push({ names: ['ptrace'], action: 'SCMP_ACT_ALLOW', args: [] });
  const archExtra = ARCH_SYSCALLS[arch];
  if (archExtra) syscalls.push({ names: [...archExtra], action: 'SCMP_ACT_ALLOW', args: [] });
  for (const cap of capabilities) {
    const extra = CAP_SYSCALLS[cap];
    if (extra) syscalls.push({ names: [...extra], action: 'SCMP_ACT_ALLOW', args: [] });
  }
  if (!capabilities.includes('CAP_SYS_ADMIN')) {
    syscalls.push({
      names: ['clone'],
      action: 'SCMP_ACT_ALLOW',
      args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
    });
    // ENOSYS (not EPERM) makes libcs fall back from clone3 to clone, which the rule above vets.
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
  }
  return { defaultAction: 'SCMP_ACT_ERRNO', architectures: [...(ARCHES[arch] ?? [])], syscalls };
}

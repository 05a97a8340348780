/**
 * The parts of the OCI runtime spec (runtime-spec 1.0.2) the agent writes. containerd stores it
 * as JSON inside the container record (`types.containerd.io/opencontainers/runtime-spec/1/Spec`).
 */
import type { OciSeccomp } from '../../../worker/seccomp.js';

export type { OciSeccomp, OciSeccompArg, OciSeccompRule } from '../../../worker/seccomp.js';

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface OciUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface OciCapabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
}

export interface OciProcess {
  terminal?: boolean;
  user: OciUser;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: OciCapabilities;
  rlimits: OciRlimit[];
  noNewPrivileges: boolean;
  oomScoreAdj?: number;
}

export interface OciNamespace {
  type: 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'user' | 'cgroup';
  path?: string;
}

export interface OciDeviceRule {
  allow: boolean;
  type?: string;
  major?: number;
  minor?: number;
  access: string;
}

export interface OciResources {
  devices: OciDeviceRule[];
  memory?: { limit?: number; swap?: number; disableOOMKiller?: boolean };
  cpu?: { shares?: number; quota?: number; period?: number };
  pids?: { limit: number };
  /** cgroup v2 files written as is (runc rejects this on v1). */
  unified?: Record<string, string>;
}

export interface OciLinux {
  resources: OciResources;
  cgroupsPath: string;
  namespaces: OciNamespace[];
  maskedPaths: string[];
  readonlyPaths: string[];
  seccomp?: OciSeccomp;
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly?: boolean };
  hostname?: string;
  mounts: OciMount[];
  linux: OciLinux;
}

/** The image configuration fields the spec uses (OCI image-spec `config` object). */
export interface ImageRunConfig {
  readonly User?: string;
  readonly Env?: readonly string[] | null;
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
  readonly WorkingDir?: string;
}

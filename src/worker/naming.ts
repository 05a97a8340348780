/**
 * Worker ids and the labels that mark a container as ours (docs/state-and-labels.md#labels). One id everywhere:
 * worker id = container id = snapshot key = CNI container id = netns name = state dir name.
 */
import { randomBytes } from 'node:crypto';
import { safeName } from './safe-name.js';

/** containerd's identifier grammar (identifiers.Validate) and length limit. */
export const ID_PATTERN = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
export const MAX_ID_LENGTH = 76;

/** Label keys. The first five are the reference agent's, kept for the gateway and operators. */
export const LABELS = {
  function: 'esb_function',
  createdBy: 'created_by',
  env: 'esb_env',
  kind: 'com.esb.kind',
  owner: 'com.esb.owner',
  createdAt: 'com.esb.created_at',
  /** Worker IP from the CNI ADD result, so a restarted agent needs no IPAM files (docs/go-agent.md#w1). */
  ip: 'com.esb.ip',
  netns: 'com.esb.netns',
  cniNetwork: 'com.esb.cni_network',
  memoryMb: 'com.esb.memory_mb',
  image: 'com.esb.image',
  /** OOM kills seen, persisted so a restarted agent still reports them. */
  oomKills: 'com.esb.oom_kills',
} as const;

export const CREATED_BY = 'esb-agent';
export const KIND_FUNCTION = 'function';

/** `{brand}-{env}-`: what every worker id of this agent starts with. */
export function workerIdPrefix(brand: string, env: string): string {
  return `${[safeName(brand), safeName(env)].filter((p) => p !== '').join('-')}-`;
}

/** `{brand}-{env}-{safe(fn)}-{8 hex}` cut to ≤ 76 chars and valid for containerd. */
export function workerId(brand: string, env: string, functionName: string, suffix: string = randomBytes(4).toString('hex')): string {
  const prefix = workerIdPrefix(brand, env).slice(0, -1);
  let fn = safeName(functionName);
  if (fn === '') fn = 'fn';
  const room = MAX_ID_LENGTH - prefix.length - suffix.length - 2;
  fn = fn.slice(0, Math.max(1, room)).replace(/[._-]+$/, '');
  const id = `${prefix}-${fn}-${suffix}`.slice(0, MAX_ID_LENGTH);
  return id;
}

/** Longest hostname the kernel takes (HOST_NAME_MAX; also one DNS label). */
export const MAX_HOSTNAME_LENGTH = 63;

/**
 * A worker's hostname: its id cut to 63 characters, less any trailing characters other than
 * letters, digits and '-'. The one rule for the hostname a runtime gives the worker (the
 * containerd spec, the docker create body) and the name the worker's hosts file maps to its
 * IP, so the two always agree. Idempotent.
 */
export function workerHostname(id: string): string {
  return id.slice(0, MAX_HOSTNAME_LENGTH).replace(/[^A-Za-z0-9-]+$/, '');
}

export interface LabelInput {
  readonly functionName: string;
  readonly env: string;
  readonly ownerId: string;
  readonly createdAt: number;
  readonly ip: string;
  readonly netns: string;
  readonly cniNetwork: string;
  readonly memoryMb: number;
  readonly image: string;
}

/** The labels of a new worker container. */
export function workerLabels(l: LabelInput): Record<string, string> {
  return {
    [LABELS.function]: l.functionName,
    [LABELS.createdBy]: CREATED_BY,
    [LABELS.env]: l.env,
    [LABELS.kind]: KIND_FUNCTION,
    [LABELS.owner]: l.ownerId,
    [LABELS.createdAt]: String(l.createdAt),
    [LABELS.ip]: l.ip,
    [LABELS.netns]: l.netns,
    [LABELS.cniNetwork]: l.cniNetwork,
    [LABELS.memoryMb]: String(l.memoryMb),
    [LABELS.image]: l.image,
  };
}

/** "Managed" = created_by, esb_env and kind all match (docs/state-and-labels.md#labels). */
export function isManaged(labels: Readonly<Record<string, string>>, env: string): boolean {
  return labels[LABELS.createdBy] === CREATED_BY && labels[LABELS.env] === env && labels[LABELS.kind] === KIND_FUNCTION;
}

/** containerd label filters selecting this agent's containers (Containers.List). */
export function managedFilter(env: string): string {
  const q = (s: string): string => JSON.stringify(s);
  return `labels.${q(LABELS.createdBy)}==${q(CREATED_BY)},labels.${q(LABELS.env)}==${q(env)},labels.${q(LABELS.kind)}==${q(KIND_FUNCTION)}`;
}

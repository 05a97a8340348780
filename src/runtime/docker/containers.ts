/**
 * One-call leaves over the Engine API's container endpoints, and the mapping of a
 * `/containers/json` summary to a worker. The runtime owns the order; these only talk.
 */
import { AgentError, isNotFound } from '../../errors.js';
import { CREATED_BY, KIND_FUNCTION, LABELS, isManaged } from '../../worker/naming.js';
import { WORKER_PORT, type WorkerState } from '../runtime.js';
import type { DockerEngineClient } from './engine-client.js';
import { engineError } from './errors.js';
import { exitCodeFromStatusText, statusFromDockerState, type DockerInspect } from './stats.js';

/** The parts of one `/containers/json` entry this runtime reads. */
export interface DockerContainerSummary {
  readonly Id: string;
  readonly Names: readonly string[];
  readonly Labels: Readonly<Record<string, string>> | null;
  readonly State: string;
  readonly Status: string;
  readonly Created: number;
  readonly NetworkSettings?: { readonly Networks?: Readonly<Record<string, { readonly IPAddress?: string }>> | null } | null;
}

/** The `filters` of every managed-container query: created_by, esb_env and kind (docs/state-and-labels.md#labels). */
export function managedLabelFilters(env: string): { label: string[] } {
  return { label: [`${LABELS.createdBy}=${CREATED_BY}`, `${LABELS.env}=${env}`, `${LABELS.kind}=${KIND_FUNCTION}`] };
}

/** Every managed container, in one call. */
export function listManaged(c: DockerEngineClient, env: string, signal?: AbortSignal): Promise<DockerContainerSummary[]> {
  return c.json<DockerContainerSummary[]>({
    method: 'GET',
    path: '/containers/json',
    query: { all: 1, filters: JSON.stringify(managedLabelFilters(env)) },
    signal,
    what: 'list containers',
  });
}

/** A summary as a worker of the table; undefined when it is not ours or lacks owner/function. */
export function workerFromSummary(
  s: DockerContainerSummary,
  env: string,
  network: string,
  prev: WorkerState | undefined,
): WorkerState | undefined {
  const l = s.Labels ?? {};
  if (!isManaged(l, env)) return undefined;
  const functionName = l[LABELS.function];
  const ownerId = l[LABELS.owner];
  const name = (s.Names[0] ?? '').replace(/^\//, '');
  if (functionName === undefined || ownerId === undefined || name === '') return undefined;
  const createdAt = Number(l[LABELS.createdAt]) || s.Created;
  const status = statusFromDockerState(s.State);
  const ip = s.NetworkSettings?.Networks?.[network]?.IPAddress ?? '';
  const exitCode = status === 'STOPPED' ? (exitCodeFromStatusText(s.Status) ?? prev?.exitCode ?? 0) : 0;
  return {
    id: name,
    name,
    functionName,
    ownerId,
    // A worker still being created keeps UNKNOWN until its Ensure finishes.
    status: prev?.status === 'UNKNOWN' && s.State === 'created' ? 'UNKNOWN' : status,
    createdAt,
    lastUsedAt: Math.max(prev?.lastUsedAt ?? 0, createdAt),
    // dockerd drops the address when the container stops; keep the one we knew.
    ipAddress: ip !== '' ? ip : (prev?.ipAddress ?? ''),
    port: WORKER_PORT,
    exitCode,
    exitTime: status === 'STOPPED' ? (prev?.exitTime ?? 0) : 0,
    oomKills: prev?.oomKills ?? 0,
    memoryMb: Number(l[LABELS.memoryMb]) || (prev?.memoryMb ?? 0),
  };
}

export async function createContainer(
  c: DockerEngineClient,
  name: string,
  body: Record<string, unknown>,
  signal?: AbortSignal,
): Promise<string> {
  const res = await c.json<{ Id: string }>({
    method: 'POST',
    path: '/containers/create',
    query: { name },
    body,
    signal,
    what: `create container ${name}`,
  });
  return res.Id;
}

export async function startContainer(c: DockerEngineClient, name: string, signal?: AbortSignal): Promise<void> {
  await c.json({ method: 'POST', path: `/containers/${name}/start`, signal, what: `start container ${name}` });
}

/** Inspect; undefined when there is no such container. */
export async function inspectContainer(c: DockerEngineClient, name: string, signal?: AbortSignal): Promise<DockerInspect | undefined> {
  try {
    return await c.json<DockerInspect>({ method: 'GET', path: `/containers/${name}/json`, signal, what: `inspect container ${name}` });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Force-removes a container (SIGKILL, then remove, with its anonymous volumes). Idempotent: a
 * container that is already gone is success. When dockerd says a removal is already running
 * (409), waits until the container is gone.
 */
export async function removeContainer(c: DockerEngineClient, name: string, signal: AbortSignal): Promise<{ existed: boolean }> {
  for (;;) {
    const res = await c.request({
      method: 'DELETE',
      path: `/containers/${name}`,
      query: { force: 1, v: 1 },
      signal,
      what: `remove container ${name}`,
    });
    if (res.status === 204) return { existed: true };
    if (res.status === 404) return { existed: false };
    if (res.status !== 409) throw engineError(`remove container ${name}`, res.status, res.body);
    // "removal of container … is already in progress": poll until it is gone.
    await new Promise((r) => setTimeout(r, 100));
    if (signal.aborted)
      throw new AgentError('DEADLINE_EXCEEDED', `remove container ${name}: dockerd was still removing it when the deadline passed`);
  }
}

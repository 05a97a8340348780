/**
 * Container records and their snapshots: thin wrappers of one containerd call each. The order
 * in which they are used lives in runtime.ts.
 */
import { isNotFound } from '../../errors.js';
import type { Container__Output } from '../../gen/containerd/containerd/services/containers/v1/Container.js';
import type { Mount__Output } from '../../gen/containerd/containerd/types/Mount.js';
import type { ContainerdClient, RequestOptions } from './client.js';
import type { OciSpec } from './spec/types.js';

/** type_url under which containerd's Go client stores a runtime spec (JSON bytes, not protobuf). */
export const SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

export type Mount = Mount__Output;
export type ContainerRecord = Container__Output;

/** Prepares the container's writable snapshot on top of the image's top layer. */
export async function prepareSnapshot(
  c: ContainerdClient,
  snapshotter: string,
  key: string,
  parent: string,
  opts: RequestOptions,
): Promise<Mount[]> {
  const res = await c.call('snapshots', 'Prepare', { snapshotter, key, parent, labels: {} }, { ...opts, what: `prepare snapshot ${key}` });
  return res.mounts;
}

/** The mounts of an existing snapshot. */
export async function snapshotMounts(c: ContainerdClient, snapshotter: string, key: string, opts: RequestOptions): Promise<Mount[]> {
  const res = await c.call('snapshots', 'Mounts', { snapshotter, key }, { ...opts, what: `mounts of snapshot ${key}` });
  return res.mounts;
}

/** Whether a snapshot exists (Snapshots.Stat; NOT_FOUND is false). */
export async function snapshotExists(c: ContainerdClient, snapshotter: string, key: string, opts: RequestOptions): Promise<boolean> {
  try {
    await c.call('snapshots', 'Stat', { snapshotter, key }, { ...opts, what: `stat snapshot ${key}` });
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Removes a snapshot; one that is already gone counts as removed. */
export async function removeSnapshot(c: ContainerdClient, snapshotter: string, key: string, opts: RequestOptions): Promise<void> {
  try {
    await c.call('snapshots', 'Remove', { snapshotter, key }, { ...opts, what: `remove snapshot ${key}` });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

export interface NewContainer {
  readonly id: string;
  readonly labels: Record<string, string>;
  readonly image: string;
  readonly runtime: string;
  /** The shim's options as a packed Any (see runcOptions); undefined = the shim's defaults. */
  readonly runtimeOptions?: { type_url: string; value: Buffer } | undefined;
  readonly spec: OciSpec;
  readonly snapshotter: string;
  readonly snapshotKey: string;
}

/**
 * The runc shim's `containerd.runc.v1.Options` for the agent's settings, or undefined when all
 * are the shim's defaults (runc from the shim's PATH, cgroupfs): then nothing is sent, exactly
 * as before these settings existed. `SystemdCgroup` must match the spec's cgroupsPath form
 * (`slice:prefix:name`), which spec.ts derives from the same setting.
 */
export function runcOptions(
  c: Pick<ContainerdClient, 'encodeAny'>,
  s: { readonly cgroupDriver: 'cgroupfs' | 'systemd'; readonly runcBinary: string | undefined },
): { type_url: string; value: Buffer } | undefined {
  if (s.cgroupDriver === 'cgroupfs' && s.runcBinary === undefined) return undefined;
  return c.encodeAny('containerd.runc.v1.Options', {
    ...(s.cgroupDriver === 'systemd' ? { systemd_cgroup: true } : {}),
    ...(s.runcBinary !== undefined ? { binary_name: s.runcBinary } : {}),
  });
}

/** Creates the container record (metadata only; nothing runs yet). */
export async function createContainer(c: ContainerdClient, n: NewContainer, opts: RequestOptions): Promise<void> {
  await c.call(
    'containers',
    'Create',
    {
      container: {
        id: n.id,
        labels: n.labels,
        image: n.image,
        runtime: { name: n.runtime, ...(n.runtimeOptions ? { options: n.runtimeOptions } : {}) },
        spec: { type_url: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(n.spec)) },
        snapshotter: n.snapshotter,
        snapshot_key: n.snapshotKey,
        extensions: {},
      },
    },
    { ...opts, what: `create container ${n.id}` },
  );
}

/**
 * Creates a record with no image and no snapshot, only so that containerd can find a task by
 * its id (Tasks.Kill/Delete look the container up first). Reconciliation uses it for a task
 * whose record is gone.
 */
export async function createPlaceholderContainer(
  c: ContainerdClient,
  n: { readonly id: string; readonly labels: Record<string, string>; readonly runtime: string },
  opts: RequestOptions,
): Promise<void> {
  // The smallest spec containerd accepts; the task it stands in for already has its own.
  const spec = { type_url: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify({ ociVersion: '1.0.2' })) };
  await c.call(
    'containers',
    'Create',
    { container: { id: n.id, labels: n.labels, runtime: { name: n.runtime }, spec } },
    { ...opts, what: `create placeholder container ${n.id}` },
  );
}

/** The container record, or undefined when there is none. */
export async function getContainer(c: ContainerdClient, id: string, opts: RequestOptions): Promise<ContainerRecord | undefined> {
  try {
    const res = await c.call('containers', 'Get', { id }, { ...opts, what: `get container ${id}` });
    return res.container ?? undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Deletes the container record; already gone counts as deleted. containerd does not refuse
 * this while a task exists (docs/containerd.md#deleting-containers): callers delete the task first.
 */
export async function deleteContainer(c: ContainerdClient, id: string, opts: RequestOptions): Promise<void> {
  try {
    await c.call('containers', 'Delete', { id }, { ...opts, what: `delete container ${id}` });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** Sets one label of a container record (an update mask keeps every other field). */
export async function setContainerLabel(c: ContainerdClient, id: string, key: string, value: string, opts: RequestOptions): Promise<void> {
  await c.call(
    'containers',
    'Update',
    { container: { id, labels: { [key]: value } }, update_mask: { paths: [`labels.${key}`] } },
    { ...opts, what: `label container ${id}` },
  );
}

/** Containers matching a containerd filter (e.g. naming.managedFilter). */
export async function listContainers(c: ContainerdClient, filter: string, opts: RequestOptions): Promise<ContainerRecord[]> {
  const res = await c.call('containers', 'List', { filters: [filter] }, { ...opts, what: 'list containers' });
  return res.containers;
}

/** The ids of every container in the namespace, whoever made them. */
export async function listContainerIds(c: ContainerdClient, opts: RequestOptions): Promise<string[]> {
  const res = await c.call('containers', 'List', { filters: [] }, { ...opts, what: 'list containers' });
  return res.containers.map((x) => x.id);
}

/** Seconds since the epoch of a protobuf Timestamp (0 for none or the Go zero time). */
export function timestampSeconds(ts: { seconds: string | number } | null | undefined): number {
  if (!ts) return 0;
  const s = Number(ts.seconds);
  return Number.isFinite(s) && s > 0 ? s : 0;
}

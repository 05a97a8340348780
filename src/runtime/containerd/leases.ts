/**
 * containerd leases: everything created under a lease stays safe from garbage collection until
 * the lease is deleted, and a lease that a crash left behind expires by itself
 * (`containerd.io/gc.expire`), so nothing it pinned is kept forever (docs/containerd.md#leases).
 */
import { randomBytes } from 'node:crypto';
import { isNotFound } from '../../errors.js';
import type { ContainerdClient, RequestOptions } from './client.js';

/** Label marking leases the agent made, so reconciliation can find its own. */
export const LEASE_OWNER_LABEL = 'com.esb.lease';

/** Creates a lease that expires after `ttlMs`, labelled as ours. Returns its id. */
export async function createLease(c: ContainerdClient, purpose: string, ttlMs: number, opts: RequestOptions): Promise<string> {
  const id = `esb-${purpose}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const expire = new Date(Date.now() + ttlMs).toISOString().replace(/\.\d{3}Z$/, 'Z');
  await c.call(
    'leases',
    'Create',
    { id, labels: { 'containerd.io/gc.expire': expire, [LEASE_OWNER_LABEL]: purpose } },
    { ...opts, what: `create lease ${id}` },
  );
  return id;
}

/** Every lease in the namespace, with its labels. */
export async function listLeases(c: ContainerdClient, opts: RequestOptions): Promise<{ id: string; labels: Record<string, string> }[]> {
  const res = await c.call('leases', 'List', { filters: [] }, { ...opts, what: 'list leases' });
  return res.leases;
}

/** Puts an existing object (content blob, snapshot) under a lease, so GC keeps it while the lease lives. */
export async function addLeaseResource(
  c: ContainerdClient,
  lease: string,
  resource: { id: string; type: string },
  opts: RequestOptions,
): Promise<void> {
  await c.call(
    'leases',
    'AddResource',
    { id: lease, resource },
    { ...opts, what: `add ${resource.type} ${resource.id} to lease ${lease}` },
  );
}

/** Deletes a lease (already gone is fine). `sync` runs GC before answering. */
export async function deleteLease(c: ContainerdClient, id: string, opts: RequestOptions & { sync?: boolean }): Promise<void> {
  try {
    await c.call('leases', 'Delete', { id, sync: opts.sync ?? false }, { ...opts, what: `delete lease ${id}` });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

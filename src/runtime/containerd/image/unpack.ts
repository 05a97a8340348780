/**
 * Unpacks an image's layers into snapshots with Snapshots + Diff, as containerd's `unpacker.go`
 * does (docs/containerd.md#unpack): snapshots are named by chainID, each layer is applied onto an
 * `extract-…` active snapshot and committed under its chainID; concurrent unpackers of the
 * same layers race benignly (ALREADY_EXISTS on Commit = someone else won).
 */
import { randomBytes } from 'node:crypto';
import { AgentError, isAlreadyExists, isNotFound } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { chainIds } from '../../../registry/digest.js';
import { updateContentLabels } from './content-store.js';
import { LAYER_TYPES, type Descriptor } from '../../../registry/oci.js';
import { toWire } from './wire.js';

/** Label on each layer blob once unpacked: its diffID. */
export const UNCOMPRESSED_LABEL = 'containerd.io/uncompressed';
/** Label on snapshots the unpacker makes (the Go unpacker's `containerd.io/snapshot.ref`). */
export const SNAPSHOT_REF_LABEL = 'containerd.io/snapshot.ref';
/** Key prefix of active snapshots made while unpacking (reconciliation can find leftovers). */
export const EXTRACT_KEY_PREFIX = 'extract-';
/** Diff.Apply decompresses and writes a whole layer: allow it time, the pull's signal bounds it. */
const APPLY_TIMEOUT_MS = 10 * 60_000;
/** Bound on cleanup calls that run after a failure. */
const CLEANUP_TIMEOUT_MS = 10_000;
/** New keys tried when Prepare finds its (random) key taken. */
const PREPARE_ATTEMPTS = 3;

/** The GC label that makes an image config keep its unpacked snapshot chain alive. */
export function snapshotGcLabel(snapshotter: string): string {
  return `containerd.io/gc.ref.snapshot.${snapshotter}`;
}

/** What to unpack into which snapshotter, under which lease. */
export interface UnpackOptions {
  readonly snapshotter: string;
  /** Compressed layer descriptors, bottom first. */
  readonly layers: readonly Descriptor[];
  /** `rootfs.diff_ids` of the image config, same order and count as `layers`. */
  readonly diffIds: readonly string[];
  /** The image config blob, which gets the snapshot GC label. */
  readonly configDigest: string;
  readonly lease: string;
  readonly signal: AbortSignal;
}

/** Outcome of unpackLayers. */
export interface UnpackResult {
  /** Top chainID: the parent of container snapshots. */
  readonly chainId: string;
  /** Layers applied by this call (0 = everything was already unpacked). */
  readonly applied: number;
}

/** True when the snapshot `key` exists in `snapshotter`. */
export async function snapshotExists(c: ContainerdClient, snapshotter: string, key: string, signal?: AbortSignal): Promise<boolean> {
  try {
    await c.call('snapshots', 'Stat', { snapshotter, key }, { signal, what: `stat snapshot ${key}` });
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

function extractKey(chainId: string): string {
  return `${EXTRACT_KEY_PREFIX}${process.hrtime.bigint().toString()}-${randomBytes(6).toString('base64url')} ${chainId}`;
}

/**
 * Makes sure the image's snapshot chain exists, applying missing layers, then labels the
 * config with `gc.ref.snapshot.<snapshotter>` (also when nothing was applied: otherwise nothing
 * roots the chain once another image goes away, docs/containerd.md#unpack).
 *
 * @throws AgentError FAILED_PRECONDITION on layer/diffID count or digest mismatch, UNIMPLEMENTED
 *   for a layer media type containerd cannot apply, containerd's errors otherwise. A failure
 *   removes the active snapshot it prepared.
 */
export async function unpackLayers(c: ContainerdClient, opts: UnpackOptions): Promise<UnpackResult> {
  const { snapshotter, layers, diffIds, lease, signal } = opts;
  if (layers.length !== diffIds.length) {
    throw new AgentError('FAILED_PRECONDITION', `image has ${layers.length} layers but its config lists ${diffIds.length} diff_ids`);
  }
  if (layers.length === 0) throw new AgentError('FAILED_PRECONDITION', 'image has no layers');
  for (const l of layers) {
    if (!LAYER_TYPES.has(l.mediaType))
      throw new AgentError('UNIMPLEMENTED', `layer ${l.digest} has media type ${l.mediaType}, which containerd cannot apply`);
  }
  const chain = chainIds(diffIds);
  const top = chain.at(-1)!;
  let applied = 0;
  if (await snapshotExists(c, snapshotter, top, signal)) {
    // Hold the existing chain under the lease until the config label below roots it.
    await c.call(
      'leases',
      'AddResource',
      { id: lease, resource: { id: top, type: `snapshots/${snapshotter}` } },
      { signal, what: `add snapshot ${top} to lease ${lease}` },
    );
  } else {
    for (let i = 0; i < layers.length; i++) {
      const chainId = chain[i]!;
      if (await snapshotExists(c, snapshotter, chainId, signal)) continue;
      const did = await applyLayer(c, {
        snapshotter,
        layer: layers[i]!,
        diffId: diffIds[i]!,
        chainId,
        parent: i === 0 ? '' : chain[i - 1]!,
        lease,
        signal,
      });
      if (did) applied++;
    }
  }
  await updateContentLabels(c, opts.configDigest, { [snapshotGcLabel(snapshotter)]: top }, { signal, lease });
  return { chainId: top, applied };
}

interface ApplyLayerOptions {
  readonly snapshotter: string;
  readonly layer: Descriptor;
  readonly diffId: string;
  readonly chainId: string;
  readonly parent: string;
  readonly lease: string;
  readonly signal: AbortSignal;
}

/** Prepare → Diff.Apply → check diffID → Commit for one layer. Returns false if another unpacker won. */
async function applyLayer(c: ContainerdClient, o: ApplyLayerOptions): Promise<boolean> {
  const labels = { [SNAPSHOT_REF_LABEL]: o.chainId };
  let key = '';
  let mounts;
  for (let attempt = 0; ; attempt++) {
    key = extractKey(o.chainId);
    try {
      const res = await c.call(
        'snapshots',
        'Prepare',
        { snapshotter: o.snapshotter, key, parent: o.parent, labels },
        { signal: o.signal, lease: o.lease, what: `prepare snapshot for layer ${o.layer.digest}` },
      );
      mounts = res.mounts;
      break;
    } catch (err) {
      if (!isAlreadyExists(err) || attempt + 1 >= PREPARE_ATTEMPTS) throw err;
      // Someone else may have finished this layer meanwhile; otherwise pick a new key.
      if (await snapshotExists(c, o.snapshotter, o.chainId, o.signal)) return false;
    }
  }
  try {
    const res = await c.call(
      'diff',
      'Apply',
      { diff: toWire(o.layer), mounts },
      { signal: o.signal, deadlineMs: APPLY_TIMEOUT_MS, what: `apply layer ${o.layer.digest}` },
    );
    const got = res.applied?.digest ?? '';
    if (got !== o.diffId) {
      throw new AgentError(
        'FAILED_PRECONDITION',
        `layer ${o.layer.digest} unpacked to ${got}, but the image config says its diff_id is ${o.diffId}`,
      );
    }
    try {
      await c.call(
        'snapshots',
        'Commit',
        { snapshotter: o.snapshotter, name: o.chainId, key, labels },
        { signal: o.signal, lease: o.lease, what: `commit snapshot ${o.chainId}` },
      );
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      // Another unpacker committed the same chainID first: theirs is as good as ours.
      await removeSnapshot(c, o.snapshotter, key);
      return false;
    }
  } catch (err) {
    await removeSnapshot(c, o.snapshotter, key);
    throw err;
  }
  await updateContentLabels(c, o.layer.digest, { [UNCOMPRESSED_LABEL]: o.diffId }, { signal: o.signal, lease: o.lease });
  return true;
}

/** Removes an active snapshot, best effort, on its own deadline (not the caller's signal). */
async function removeSnapshot(c: ContainerdClient, snapshotter: string, key: string): Promise<void> {
  try {
    await c.call('snapshots', 'Remove', { snapshotter, key }, { deadlineMs: CLEANUP_TIMEOUT_MS, what: `remove snapshot ${key}` });
  } catch {
    // already gone, or containerd down: the lease still covers it until it expires
  }
}

/**
 * One image pull without the Go client, in the order containerd's `Client.Pull` follows
 * (docs/containerd.md#pulling, docs/containerd.md#unpack):
 * lease → resolve → index (all children labelled) → host manifest (config + layer labels,
 * layer count and declared sizes checked against the bounds) → config → layers (at most 3 at a time, each verified while written)
 * → unpack → image record → lease deleted. Blobs already in the namespace are not downloaded
 * again; they are only relabelled and attached to the lease so GC cannot take them before the
 * image record roots them.
 */
import type { Logger } from '../../../log.js';
import { AgentError, abortError } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { createLease, deleteLease } from '../leases.js';
import {
  DISTRIBUTION_SOURCE_PREFIX,
  contentInfo,
  mergeDistributionSource,
  readContent,
  updateContentLabels,
  withinLabelLimit,
} from './content-store.js';
import { ingestRef, writeBlob } from './content-writer.js';
import { checkImageLimits, type ImageLimits } from './image-limits.js';
import { putImage } from './image-store.js';
import {
  assertNotSchema1,
  isIndexType,
  isManifestType,
  parseIndex,
  parseManifest,
  type Descriptor,
  type Platform,
} from '../../../registry/oci.js';
import { selectManifest } from '../../../registry/platform.js';
import { registryHostname, type ImageReference } from '../../../registry/reference.js';
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, type RegistryClient } from '../../../registry/registry-client.js';
import { describeImage, type ResolvedImage } from './resolved-image.js';
import { unpackLayers } from './unpack.js';

/** A crashed agent's pull lease stops protecting its blobs after a day (the Go client's `WithLease`). */
export const PULL_LEASE_TTL_MS = 24 * 3600_000;
/** containerd CRI's default `max_concurrent_downloads`. */
export const MAX_CONCURRENT_DOWNLOADS = 3;
/** How often a running download logs its progress. */
const PROGRESS_INTERVAL_MS = 5_000;
/** Lease deletion runs after the pull's signal may have fired: own bound. */
const CLEANUP_TIMEOUT_MS = 10_000;

/** Long-lived collaborators of a pull. */
export interface PullDeps {
  readonly client: ContainerdClient;
  readonly registry: RegistryClient;
  readonly snapshotter: string;
  readonly platform: Platform;
  readonly log: Logger;
  /** Bounds on layer count and declared sizes, checked before any layer is downloaded. */
  readonly limits: ImageLimits;
  /** Counts every byte downloaded from the registry. */
  readonly onBytes?: ((n: number) => void) | undefined;
}

/** One pull: the reference, optionally its already-known top descriptor, and the run's signal. */
export interface PullRequest {
  readonly ref: ImageReference;
  /** The top descriptor when already known (resolved by an `always` check, or a local record). */
  readonly target?: Descriptor | undefined;
  /** Its body, when resolving had to GET it. */
  readonly targetBody?: Buffer | undefined;
  readonly signal: AbortSignal;
}

/** Durations (ms) and counts of one pull, for logs and metrics. */
export interface PullStats {
  resolveMs: number;
  fetchMs: number;
  unpackMs: number;
  /** Bytes downloaded from the registry. */
  bytes: number;
  blobsFetched: number;
  blobsPresent: number;
  layersApplied: number;
}

/** The pulled image and how the pull went. */
export interface PullResult {
  readonly image: ResolvedImage;
  readonly stats: PullStats;
}

/** Attaches an existing object to the lease, so GC keeps it until the image record exists. */
async function leaseResource(c: ContainerdClient, lease: string, type: string, id: string, signal: AbortSignal): Promise<void> {
  await c.call('leases', 'AddResource', { id: lease, resource: { id, type } }, { signal, what: `add ${type} ${id} to lease ${lease}` });
}

/**
 * Runs `fn` over `items` with at most `limit` at once. The first failure aborts the others and
 * is rethrown once all have settled (so their ingests are cleaned up before the caller goes on).
 */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const inner = AbortSignal.any([signal, stop.signal]);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const stopped = (): boolean => stop.signal.aborted;
  const worker = async (): Promise<void> => {
    while (next < items.length && !stopped()) {
      const item = items[next++]!;
      try {
        await fn(item, inner);
      } catch (err) {
        if (!stopped()) {
          failure = { error: err };
          stop.abort(err);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error instanceof Error ? failure.error : new Error(String(failure.error));
}

/**
 * Pulls and unpacks `ref` and points its image record at the top descriptor.
 *
 * @throws AgentError from the registry (NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE, ...),
 *   containerd, or CANCELLED/DEADLINE_EXCEEDED from `signal`. On failure the lease is deleted
 *   and no image record is written, so GC can take whatever was downloaded.
 */
export async function pullImage(deps: PullDeps, req: PullRequest): Promise<PullResult> {
  const { client: c, registry, log } = deps;
  const { ref, signal } = req;
  const stats: PullStats = { resolveMs: 0, fetchMs: 0, unpackMs: 0, bytes: 0, blobsFetched: 0, blobsPresent: 0, layersApplied: 0 };
  const onBytes = (n: number): void => {
    stats.bytes += n;
    deps.onBytes?.(n);
  };
  const lease = await createLease(c, 'pull', PULL_LEASE_TTL_MS, { signal });
  const sourceKey = DISTRIBUTION_SOURCE_PREFIX + registryHostname(ref.registry);

  /** The labels a blob of this pull carries, merged with what it already has. */
  const labelsFor = (children: Record<string, string>, existing?: Readonly<Record<string, string>>): Record<string, string> =>
    withinLabelLimit({ ...children, [sourceKey]: mergeDistributionSource(existing?.[sourceKey], ref.repository) });

  /**
   * Makes sure a small blob (index, manifest, config) is stored with its labels and returns
   * its bytes. Present in this namespace → read locally and relabelled. Otherwise written: the
   * registry is asked only when containerd's STAT says it lacks the bytes (a blob committed in
   * another namespace of the same daemon needs only a COMMIT, docs/containerd.md#content-write); then the
   * bytes are read back to compute the child labels.
   */
  const ensureSmall = async (
    kind: 'index' | 'manifest' | 'config',
    desc: Descriptor,
    known: Buffer | undefined,
    childLabels: (bytes: Buffer) => Record<string, string>,
  ): Promise<Buffer> => {
    const max = kind === 'config' ? MAX_CONFIG_BYTES : MAX_MANIFEST_BYTES;
    const info = await contentInfo(c, desc.digest, { signal });
    if (info) {
      const bytes = await readContent(c, desc.digest, { signal, maxBytes: max });
      await leaseResource(c, lease, 'content', desc.digest, signal);
      await updateContentLabels(c, desc.digest, labelsFor(childLabels(bytes), info.labels), { signal, lease });
      stats.blobsPresent++;
      return bytes;
    }
    let bytes = known;
    const fetched = { yes: false }; // set inside open(), which writeBlob calls only when needed
    const outcome = await writeBlob(c, {
      ref: ingestRef(kind, desc.digest),
      desc,
      labels: () => labelsFor(bytes ? childLabels(bytes) : {}),
      lease,
      signal,
      open: async () => {
        if (!bytes) {
          bytes = kind === 'config' ? await registry.fetchBlobBytes(ref, desc, signal) : await registry.fetchManifest(ref, desc, signal);
          fetched.yes = true;
          onBytes(bytes.length);
        }
        return { offset: 0, body: [bytes], destroy: () => undefined };
      },
    });
    if (fetched.yes) stats.blobsFetched++;
    else stats.blobsPresent++;
    if (outcome === 'exists' || !bytes) {
      const stored = bytes ?? (await readContent(c, desc.digest, { signal, maxBytes: max }));
      const current = await contentInfo(c, desc.digest, { signal });
      await updateContentLabels(c, desc.digest, labelsFor(childLabels(stored), current?.labels), { signal, lease });
      return stored;
    }
    return bytes;
  };

  const ensureLayer = async (layer: Descriptor, layerSignal: AbortSignal): Promise<void> => {
    const t0 = performance.now();
    const info = await contentInfo(c, layer.digest, { signal: layerSignal });
    if (info) {
      await leaseResource(c, lease, 'content', layer.digest, layerSignal);
      if (info.labels[sourceKey]?.split(',').includes(ref.repository) !== true) {
        await updateContentLabels(c, layer.digest, labelsFor({}, info.labels), { signal: layerSignal, lease });
      }
      stats.blobsPresent++;
      return;
    }
    const labels = labelsFor({});
    const fetched = { yes: false }; // set inside open(), which writeBlob calls only when needed
    const outcome = await writeBlob(c, {
      ref: ingestRef('layer', layer.digest),
      desc: layer,
      labels,
      lease,
      signal: layerSignal,
      open: (offset) => {
        fetched.yes = true;
        return registry.openBlob(ref, layer, offset, layerSignal);
      },
      onBytes,
    });
    if (outcome === 'exists') await updateContentLabels(c, layer.digest, labels, { signal: layerSignal, lease });
    if (fetched.yes) stats.blobsFetched++;
    else stats.blobsPresent++;
    log.debug({ ref: ref.name, digest: layer.digest, size: layer.size, ms: Math.round(performance.now() - t0) }, 'layer stored');
  };

  let progress: NodeJS.Timeout | undefined;
  try {
    let t = performance.now();
    let top = req.target;
    let topBody = req.targetBody;
    if (!top) {
      const resolved = await registry.resolve(ref, signal);
      top = resolved.descriptor;
      topBody = resolved.body;
    }
    stats.resolveMs = performance.now() - t;
    log.info({ ref: ref.name, digest: top.digest, mediaType: top.mediaType, resolveMs: Math.round(stats.resolveMs) }, 'pulling image');

    t = performance.now();
    assertNotSchema1(top.mediaType, ref.name);
    let manifestDesc = top;
    if (isIndexType(top.mediaType)) {
      const what = `index ${top.digest} of ${ref.name}`;
      const indexBytes = await ensureSmall('index', top, topBody, (bytes) =>
        // Every child, not only the host's: the Go client labels all entries (§2.5).
        Object.fromEntries(
          parseIndex(bytes, top.mediaType, what).manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]),
        ),
      );
      manifestDesc = selectManifest(parseIndex(indexBytes, top.mediaType, what), deps.platform, ref.name);
    } else if (!isManifestType(top.mediaType)) {
      throw new AgentError('FAILED_PRECONDITION', `image ${ref.name}: unsupported manifest media type ${top.mediaType}`);
    }
    const manifestWhat = `manifest ${manifestDesc.digest} of ${ref.name}`;
    const manifestBytes = await ensureSmall('manifest', manifestDesc, manifestDesc === top ? topBody : undefined, (bytes) => {
      const m = parseManifest(bytes, manifestDesc.mediaType, manifestWhat);
      return {
        'containerd.io/gc.ref.content.config': m.config.digest,
        ...Object.fromEntries(m.layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l.digest])),
      };
    });
    const manifest = parseManifest(manifestBytes, manifestDesc.mediaType, manifestWhat);
    checkImageLimits(ref.name, manifest, deps.limits);
    const configBytes = await ensureSmall('config', manifest.config, undefined, () => ({}));
    const image = describeImage(ref.name, top, manifestDesc.digest, manifest, configBytes);

    const totalBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    progress = setInterval(() => {
      log.info({ ref: ref.name, bytes: stats.bytes, layerBytes: totalBytes }, 'pull in progress');
    }, PROGRESS_INTERVAL_MS);
    progress.unref();
    await forEachLimited(manifest.layers, MAX_CONCURRENT_DOWNLOADS, signal, ensureLayer);
    clearInterval(progress);
    stats.fetchMs = performance.now() - t;

    t = performance.now();
    const unpacked = await unpackLayers(c, {
      snapshotter: deps.snapshotter,
      layers: manifest.layers,
      diffIds: image.config.rootfs.diff_ids,
      configDigest: image.configDigest,
      lease,
      signal,
    });
    stats.layersApplied = unpacked.applied;
    stats.unpackMs = performance.now() - t;

    await putImage(c, ref.name, top, { signal });
    return { image, stats };
  } catch (err) {
    throw signal.aborted && !(err instanceof AgentError && err.code !== 'CANCELLED' && err.code !== 'DEADLINE_EXCEEDED')
      ? abortError(signal, `pull ${ref.name}`)
      : err;
  } finally {
    clearInterval(progress);
    await deleteLease(c, lease, { sync: false, deadlineMs: CLEANUP_TIMEOUT_MS }).catch((err: unknown) => {
      log.warn({ err, lease }, 'could not delete the pull lease; it expires by itself');
    });
  }
}

/**
 * Unpacks an image whose blobs are all local (IMAGE_PULL_POLICY=never), under its own lease.
 *
 * @throws AgentError NOT_FOUND when a layer blob is missing locally.
 */
export async function unpackLocal(
  deps: Pick<PullDeps, 'client' | 'snapshotter'>,
  image: ResolvedImage,
  layers: readonly Descriptor[],
  signal: AbortSignal,
): Promise<number> {
  const c = deps.client;
  for (const l of layers) {
    if (!(await contentInfo(c, l.digest, { signal }))) {
      throw new AgentError(
        'NOT_FOUND',
        `image ${image.name} is not complete locally (layer ${l.digest} missing) and IMAGE_PULL_POLICY=never`,
      );
    }
  }
  const lease = await createLease(c, 'unpack', PULL_LEASE_TTL_MS, { signal });
  try {
    const r = await unpackLayers(c, {
      snapshotter: deps.snapshotter,
      layers,
      diffIds: image.config.rootfs.diff_ids,
      configDigest: image.configDigest,
      lease,
      signal,
    });
    return r.applied;
  } finally {
    await deleteLease(c, lease, { sync: false, deadlineMs: CLEANUP_TIMEOUT_MS }).catch(() => undefined);
  }
}

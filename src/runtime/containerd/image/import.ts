/**
 * Air-gapped image import (`esb-agent import <tar>`): loads a `docker save` tarball (the legacy
 * `<id>/layer.tar` form and the Docker ≥ 25 form with `blobs/sha256/…`) or an OCI image-layout
 * tarball into containerd, the way a pull would leave it (pull.ts):
 *
 *   lease → every blob into the content store (import-archive.ts; verified against its digest)
 *   → for docker save, a Docker schema 2 manifest built from manifest.json's config + layers
 *   → GC labels (index → manifests, manifest → config + layers) → unpack the host platform's
 *   layers into the snapshotter → image records → lease deleted.
 *
 * This module applies (writes content, labels, unpacks, makes records); import-plan.ts reads
 * and validates the archive's metadata and decides which images get which names.
 *
 * Names: `io.containerd.image.name`, else `org.opencontainers.image.ref.name` when it is a full
 * reference (OCI layout); `RepoTags` (docker save); or the caller's `name` override. Every name
 * is normalised like EnsureContainer's `image` (reference.ts), so `IMAGE_PULL_POLICY=never`
 * finds it. A name that already has a record pointing at another digest is not replaced
 * unless `force` is set (an archive's names are chosen by whoever made it). On any failure the
 * lease is deleted with a synchronous GC and no image record is left, so nothing of a failed
 * import stays behind.
 *
 * Bounds: the archive's bytes (blobs and spooled files together) and each image's layer count
 * and declared sizes are checked against the pull bounds (AGENT_IMAGE_MAX_*); metadata
 * entries are capped in number and size (import-archive.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentError } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { addLeaseResource, createLease, deleteLease } from '../leases.js';
import { contentInfo, readContent, updateContentLabels } from './content-store.js';
import { ingestRef, writeBlob } from './content-writer.js';
import { sha256Digest } from '../../../registry/digest.js';
import { readArchive, spooledSource, type ArchiveContents, type Compression } from './import-archive.js';
import { checkImageLimits, type ImageLimits } from './image-limits.js';
import { deleteImage, getImage, putImage } from './image-store.js';
import {
  dockerSaveManifest,
  dockerTagsByManifest,
  imageName,
  invalid,
  parseDockerManifest,
  planOciLayout,
  refuseOverwrites,
  resolveLink,
  settleNames,
  type PlannedImage,
} from './import-plan.js';
import { isIndexType, isManifestType, parseIndex, parseManifest, type Descriptor, type Platform } from '../../../registry/oci.js';
import { hostPlatform, selectManifest } from '../../../registry/platform.js';
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES } from '../../../registry/registry-client.js';
import { describeImage } from './resolved-image.js';
import { unpackLayers } from './unpack.js';

export { IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION } from './import-plan.js';

/** A crashed import's lease stops protecting its blobs after a day, like a pull's. */
export const IMPORT_LEASE_TTL_MS = 24 * 3600_000;
/** Lease deletion and image cleanup run after the caller's signal may have fired: own bound. */
const CLEANUP_TIMEOUT_MS = 30_000;

export interface ImportOptions {
  readonly client: ContainerdClient;
  /** Snapshotter to unpack into (CONTAINERD_SNAPSHOTTER). */
  readonly snapshotter: string;
  /** Name every image of the archive this instead (the archive must hold exactly one image). */
  readonly name?: string | undefined;
  /** Platform to unpack from a multi-platform index (default: this host's). */
  readonly platform?: Platform | undefined;
  readonly signal: AbortSignal;
  /** Parent of the temp dir for spooled legacy layers (default os.tmpdir()). */
  readonly tmpDir?: string | undefined;
  /** Layer count and size bounds; `maxImageBytes` also bounds the whole archive's bytes. */
  readonly limits: ImageLimits;
  /** Replace records of the same name that point at another digest. */
  readonly force?: boolean | undefined;
}

/** One image the import created or updated. */
export interface ImportedImage {
  /** Normalised names (containerd image records) pointing at `target`. */
  readonly names: readonly string[];
  readonly target: Descriptor;
  /** The host manifest's digest (the target itself unless it is an index). */
  readonly manifestDigest: string;
  /** Top chainID, unpacked in the snapshotter. */
  readonly chainId: string;
  /** Layers applied by this import (0 = the snapshots were there already). */
  readonly layersApplied: number;
}

export interface ImportResult {
  readonly format: 'oci-layout' | 'docker-save';
  readonly images: readonly ImportedImage[];
  /** Blobs written into the content store, and blobs containerd already had. */
  readonly blobsWritten: number;
  readonly blobsPresent: number;
}

/**
 * Stores one archive file (a blob already written, a spooled file or in-memory metadata) in
 * containerd and describes it. Throws INVALID_ARGUMENT when the archive has no such file.
 */
async function storeArchiveFile(
  c: ContainerdClient,
  contents: ArchiveContents,
  name: string,
  ctx: { file: string; lease: string; signal: AbortSignal; counts: { written: number; present: number } },
): Promise<{ digest: string; size: number; compression: Compression; bytes?: Buffer }> {
  const at = resolveLink(contents, name);
  const blob = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(at);
  if (blob) {
    const stored = contents.blobs.get(`sha256:${blob[1]!}`);
    if (!stored) throw invalid(ctx.file, `manifest.json names ${name}, which is not in the archive`);
    return stored;
  }
  const meta = contents.metadata.get(at);
  const spooled = contents.spooled.get(at);
  if (meta === undefined && spooled === undefined) throw invalid(ctx.file, `manifest.json names ${name}, which is not in the archive`);
  const digest = meta ? sha256Digest(meta) : spooled!.digest;
  const size = meta ? meta.length : spooled!.size;
  const outcome = await writeBlob(c, {
    ref: ingestRef('unknown', digest),
    desc: { mediaType: 'application/octet-stream', digest, size },
    labels: {},
    lease: ctx.lease,
    signal: ctx.signal,
    open: meta ? () => Promise.resolve({ offset: 0, body: [meta], destroy: () => undefined }) : spooledSource(spooled!),
  });
  if (outcome === 'exists') {
    await addLeaseResource(c, ctx.lease, { id: digest, type: 'content' }, { signal: ctx.signal });
    ctx.counts.present++;
  } else {
    ctx.counts.written++;
  }
  return { digest, size, compression: spooled?.compression ?? 'none', ...(meta ? { bytes: meta } : {}) };
}

/** Writes a small JSON blob we made (a manifest) under the lease. */
async function storeJson(
  c: ContainerdClient,
  bytes: Buffer,
  ctx: { lease: string; signal: AbortSignal; counts: { written: number; present: number } },
): Promise<string> {
  const digest = sha256Digest(bytes);
  const outcome = await writeBlob(c, {
    ref: ingestRef('manifest', digest),
    desc: { mediaType: 'application/octet-stream', digest, size: bytes.length },
    labels: {},
    lease: ctx.lease,
    signal: ctx.signal,
    open: () => Promise.resolve({ offset: 0, body: [bytes], destroy: () => undefined }),
  });
  if (outcome === 'exists') {
    await addLeaseResource(c, ctx.lease, { id: digest, type: 'content' }, { signal: ctx.signal });
    ctx.counts.present++;
  } else {
    ctx.counts.written++;
  }
  return digest;
}

/**
 * Stores the files of each docker save entry (config, layers) and a manifest made for it, and
 * plans the image that manifest is the top of.
 */
async function writeDockerSaveImages(
  c: ContainerdClient,
  contents: ArchiveContents,
  file: string,
  ctx: { lease: string; signal: AbortSignal; counts: { written: number; present: number } },
): Promise<PlannedImage[]> {
  const entries = parseDockerManifest(contents.metadata.get('manifest.json')!, file);
  const planned: PlannedImage[] = [];
  for (const [i, e] of entries.entries()) {
    const config = await storeArchiveFile(c, contents, e.config, { file, ...ctx });
    if (config.size > MAX_CONFIG_BYTES) throw invalid(file, `image config ${e.config} is over ${MAX_CONFIG_BYTES} bytes`);
    const layers = [];
    for (const l of e.layers) layers.push(await storeArchiveFile(c, contents, l, { file, ...ctx }));
    const manifest = dockerSaveManifest(config, layers);
    const digest = await storeJson(c, manifest.bytes, ctx);
    planned.push({
      target: { mediaType: manifest.mediaType, digest, size: manifest.bytes.length },
      names: e.repoTags.map((t) => imageName(t, `${file}: manifest.json entry ${i} RepoTags`)),
      what: `${file}: manifest.json entry ${i}`,
    });
  }
  return planned;
}

/** Labels, checks and unpacks one planned image; returns what the record will point at. */
async function prepareImage(
  c: ContainerdClient,
  img: PlannedImage,
  opts: { snapshotter: string; platform: Platform; lease: string; signal: AbortSignal; limits: ImageLimits },
): Promise<Omit<ImportedImage, 'names'>> {
  const { lease, signal } = opts;
  const need = async (digest: string, role: string): Promise<void> => {
    if (!(await contentInfo(c, digest, { signal })))
      throw new AgentError('INVALID_ARGUMENT', `${img.what}: the archive lacks ${role} ${digest}`);
  };
  await need(img.target.digest, 'the image');
  let manifestDesc = img.target;
  if (isIndexType(img.target.mediaType)) {
    const index = parseIndex(
      await readContent(c, img.target.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }),
      img.target.mediaType,
      `${img.what} index ${img.target.digest}`,
    );
    const children = Object.fromEntries(index.manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]));
    await updateContentLabels(c, img.target.digest, children, { signal, lease });
    manifestDesc = selectManifest(index, opts.platform, img.what);
    await need(manifestDesc.digest, 'the host platform manifest');
  } else if (!isManifestType(img.target.mediaType)) {
    throw new AgentError('INVALID_ARGUMENT', `${img.what}: unsupported media type ${img.target.mediaType}`);
  }
  const manifestWhat = `${img.what} manifest ${manifestDesc.digest}`;
  const manifest = parseManifest(
    await readContent(c, manifestDesc.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }),
    manifestDesc.mediaType,
    manifestWhat,
  );
  checkImageLimits(img.names[0] ?? img.what, manifest, opts.limits);
  await need(manifest.config.digest, 'the image config');
  for (const l of manifest.layers) await need(l.digest, 'layer');
  await updateContentLabels(
    c,
    manifestDesc.digest,
    {
      'containerd.io/gc.ref.content.config': manifest.config.digest,
      ...Object.fromEntries(manifest.layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l.digest])),
    },
    { signal, lease },
  );
  const configBytes = await readContent(c, manifest.config.digest, { signal, maxBytes: MAX_CONFIG_BYTES });
  const described = describeImage(img.names[0] ?? img.what, img.target, manifestDesc.digest, manifest, configBytes);
  const unpacked = await unpackLayers(c, {
    snapshotter: opts.snapshotter,
    layers: manifest.layers,
    diffIds: described.config.rootfs.diff_ids,
    configDigest: described.configDigest,
    lease,
    signal,
  });
  return { target: img.target, manifestDigest: manifestDesc.digest, chainId: unpacked.chainId, layersApplied: unpacked.applied };
}
/** Deletes image records this import created (best effort, own deadline). */
async function deleteImages(c: ContainerdClient, names: readonly string[]): Promise<void> {
  for (const name of names) await deleteImage(c, name, { deadlineMs: CLEANUP_TIMEOUT_MS });
}

/**
 * Imports the image tarball at `file` into containerd and unpacks it.
 *
 * @throws AgentError INVALID_ARGUMENT (not a tar, no index.json or manifest.json, a file the
 *   metadata names is missing, a bad name, several images with one `name`), FAILED_PRECONDITION
 *   (a blob that does not match its digest, a layer whose diff_id differs from the config),
 *   NOT_FOUND (no manifest for this platform), UNIMPLEMENTED (a layer type containerd cannot
 *   apply), containerd's errors, CANCELLED/DEADLINE_EXCEEDED. Nothing is left on failure.
 */
export async function importImageArchive(file: string, opts: ImportOptions): Promise<ImportResult> {
  const { client: c, signal } = opts;
  const platform = opts.platform ?? hostPlatform();
  const override = opts.name === undefined ? undefined : imageName(opts.name, '--name');
  const spoolDir = await mkdtemp(path.join(opts.tmpDir ?? os.tmpdir(), 'esb-import-'));
  const lease = await createLease(c, 'import', IMPORT_LEASE_TTL_MS, { signal });
  const created: string[] = [];
  let ok = false;
  try {
    const contents = await readArchive(file, { client: c, lease, signal, spoolDir, maxBytes: opts.limits.maxImageBytes });
    const counts = { written: 0, present: 0 };
    for (const b of contents.blobs.values()) {
      if (b.written) counts.written++;
      else counts.present++;
    }
    let format: ImportResult['format'];
    let planned: PlannedImage[];
    if (contents.metadata.has('index.json')) {
      format = 'oci-layout';
      planned = planOciLayout(contents, file, await dockerTagsByManifest(c, contents, file, signal));
    } else if (contents.metadata.has('manifest.json')) {
      format = 'docker-save';
      planned = await writeDockerSaveImages(c, contents, file, { lease, signal, counts });
    } else {
      throw invalid(file, 'not an image archive: it has neither index.json (OCI image layout) nor manifest.json (docker save)');
    }
    settleNames(planned, override, file);
    if (opts.force !== true) await refuseOverwrites(c, planned, signal);
    const images: ImportedImage[] = [];
    for (const p of planned)
      images.push({
        names: p.names,
        ...(await prepareImage(c, p, { snapshotter: opts.snapshotter, platform, lease, signal, limits: opts.limits })),
      });
    // Records last: they root everything above, once all of it is complete.
    for (const img of images) {
      for (const name of img.names) {
        const existed = (await getImage(c, name, signal)) !== undefined;
        await putImage(c, name, img.target, { signal });
        // Only records this import made are removed if a later step fails.
        if (!existed) created.push(name);
      }
    }
    ok = true;
    return { format, images, blobsWritten: counts.written, blobsPresent: counts.present };
  } finally {
    if (!ok) await deleteImages(c, created).catch(() => undefined);
    // On failure, GC at once so that nothing the import wrote outlives it.
    await deleteLease(c, lease, { sync: !ok, deadlineMs: CLEANUP_TIMEOUT_MS }).catch(() => undefined);
    await rm(spoolDir, { recursive: true, force: true });
  }
}

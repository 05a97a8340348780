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
import { AgentError, isNotFound } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { createLease, deleteLease } from '../leases.js';
import { contentInfo, readContent, updateContentLabels } from './content-store.js';
import { ingestRef, writeBlob } from './content-writer.js';
import { sha256Digest } from '../../../registry/digest.js';
import { archivePath, readArchive, spooledSource, type ArchiveContents, type Compression } from './import-archive.js';
import { checkImageLimits, type ImageLimits } from './image-limits.js';
import { getImage, putImage } from './image-store.js';
import { isIndexType, isManifestType, MediaType, parseIndex, parseJsonObject, parseManifest, type Descriptor, type Platform } from '../../../registry/oci.js';
import { hostPlatform, selectManifest } from '../../../registry/platform.js';
import { parseReference } from '../../../registry/reference.js';
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES } from '../../../registry/registry-client.js';
import { describeImage } from './resolved-image.js';
import { unpackLayers } from './unpack.js';

/** A crashed import's lease stops protecting its blobs after a day, like a pull's. */
export const IMPORT_LEASE_TTL_MS = 24 * 3600_000;
/** Lease deletion and image cleanup run after the caller's signal may have fired: own bound. */
const CLEANUP_TIMEOUT_MS = 30_000;
/** containerd's annotation carrying a full image name in an OCI layout's index.json. */
export const IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';
/** The OCI annotation naming an index.json entry: a tag, or a full reference. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

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

/** An image to create: its top descriptor and the names to give it. */
interface PlannedImage {
  readonly target: Descriptor;
  readonly names: string[];
  /** Where it came from, for messages. */
  readonly what: string;
}

function invalid(file: string, why: string): AgentError {
  return new AgentError('INVALID_ARGUMENT', `${file}: ${why}`);
}

/** Normalises a name from the archive or the caller; throws INVALID_ARGUMENT naming its source. */
function imageName(ref: string, source: string): string {
  try {
    return parseReference(ref).name;
  } catch (err) {
    throw new AgentError('INVALID_ARGUMENT', `${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** A ref.name annotation is a full reference when it names a repository, not only a tag. */
function isFullReference(refName: string): boolean {
  return refName.includes('/') || /^[^:]+:[^:]+$/.test(refName);
}

/** `manifest.json` of docker save: `[{ Config, RepoTags, Layers }]`. */
interface DockerManifestEntry {
  readonly config: string;
  readonly repoTags: readonly string[];
  readonly layers: readonly string[];
}

function parseDockerManifest(bytes: Buffer, file: string): DockerManifestEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(file, 'manifest.json is not valid JSON');
  }
  if (!Array.isArray(doc) || doc.length === 0) throw invalid(file, 'manifest.json must be a non-empty list of images');
  return doc.map((e: unknown, i) => {
    const o = (e ?? {}) as Record<string, unknown>;
    const { Config: config, RepoTags: tags, Layers: layers } = o;
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
    if (typeof config !== 'string' || !strings(layers) || (tags !== undefined && tags !== null && !strings(tags))) {
      throw invalid(file, `manifest.json entry ${i} needs Config (a path), Layers (paths) and optional RepoTags`);
    }
    return { config: archivePath(config), repoTags: strings(tags) ? tags : [], layers: layers.map(archivePath) };
  });
}

/** Follows symlinks inside the archive (legacy docker save links repeated layers). */
function resolveLink(contents: ArchiveContents, name: string): string {
  let at = name;
  for (let hops = 0; hops < 16; hops++) {
    const next = contents.links.get(at);
    if (next === undefined) return at;
    at = next;
  }
  return at;
}

const DOCKER_LAYER_TYPES: Readonly<Record<Compression, string>> = { gzip: MediaType.dockerLayerGzip, none: MediaType.dockerLayer, zstd: MediaType.ociLayerZstd };
const OCI_LAYER_TYPES: Readonly<Record<Compression, string>> = { gzip: MediaType.ociLayerGzip, none: MediaType.ociLayer, zstd: MediaType.ociLayerZstd };

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
    await c.call('leases', 'AddResource', { id: ctx.lease, resource: { id: digest, type: 'content' } }, { signal: ctx.signal, what: `add content ${digest} to lease ${ctx.lease}` });
    ctx.counts.present++;
  } else {
    ctx.counts.written++;
  }
  return { digest, size, compression: spooled?.compression ?? 'none', ...(meta ? { bytes: meta } : {}) };
}

/** Writes a small JSON blob we made (a manifest) under the lease. */
async function storeJson(c: ContainerdClient, bytes: Buffer, ctx: { lease: string; signal: AbortSignal; counts: { written: number; present: number } }): Promise<string> {
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
    await c.call('leases', 'AddResource', { id: ctx.lease, resource: { id: digest, type: 'content' } }, { signal: ctx.signal, what: `add content ${digest} to lease ${ctx.lease}` });
    ctx.counts.present++;
  } else {
    ctx.counts.written++;
  }
  return digest;
}

/** Plans the images of an OCI layout (index.json; also what Docker ≥ 25 writes). */
function planOciLayout(contents: ArchiveContents, file: string, dockerTags: ReadonlyMap<string, readonly string[]>): PlannedImage[] {
  const index = parseIndex(contents.metadata.get('index.json')!, MediaType.ociIndex, `${file}: index.json`);
  if (index.manifests.length === 0) throw invalid(file, 'index.json lists no images');
  return index.manifests.map((d, i) => {
    const names: string[] = [];
    const what = `${file}: index.json manifests[${i}]`;
    const full = d.annotations?.[IMAGE_NAME_ANNOTATION];
    const refName = d.annotations?.[REF_NAME_ANNOTATION];
    if (full !== undefined && full !== '') names.push(imageName(full, `${what} ${IMAGE_NAME_ANNOTATION}`));
    else if (refName !== undefined && isFullReference(refName)) names.push(imageName(refName, `${what} ${REF_NAME_ANNOTATION}`));
    for (const tag of dockerTags.get(d.digest) ?? []) {
      const n = imageName(tag, `${file}: manifest.json RepoTags`);
      if (!names.includes(n)) names.push(n);
    }
    return { target: d, names, what };
  });
}

/**
 * The docker-save manifests (Docker ≥ 25 writes them next to an OCI index): their RepoTags by
 * the digest of the OCI manifest whose config they share, so both name the same image.
 */
async function dockerTagsByManifest(c: ContainerdClient, contents: ArchiveContents, file: string, signal: AbortSignal): Promise<Map<string, readonly string[]>> {
  const out = new Map<string, readonly string[]>();
  const mj = contents.metadata.get('manifest.json');
  if (mj === undefined) return out;
  const entries = parseDockerManifest(mj, file);
  for (const [digest, blob] of contents.blobs) {
    if (blob.size > MAX_MANIFEST_BYTES) continue;
    let config: unknown;
    try {
      config = parseJsonObject(await readContent(c, digest, { signal, maxBytes: MAX_MANIFEST_BYTES }), digest)['config'];
    } catch {
      continue; // a layer or non-JSON blob
    }
    const configDigest = (config as { digest?: unknown } | undefined)?.digest;
    if (typeof configDigest !== 'string') continue;
    const entry = entries.find((e) => e.config === `blobs/sha256/${configDigest.slice('sha256:'.length)}`);
    if (entry) out.set(digest, entry.repoTags);
  }
  return out;
}

/** Builds, stores and plans a Docker schema 2 (or OCI, for zstd layers) manifest per manifest.json entry. */
async function planDockerSave(
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
    const oci = layers.some((l) => l.compression === 'zstd');
    const manifest = {
      schemaVersion: 2,
      mediaType: oci ? MediaType.ociManifest : MediaType.dockerManifest,
      config: { mediaType: oci ? MediaType.ociConfig : MediaType.dockerConfig, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: (oci ? OCI_LAYER_TYPES : DOCKER_LAYER_TYPES)[l.compression], digest: l.digest, size: l.size })),
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const digest = await storeJson(c, bytes, ctx);
    planned.push({
      target: { mediaType: manifest.mediaType, digest, size: bytes.length },
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
    if (!(await contentInfo(c, digest, { signal }))) throw new AgentError('INVALID_ARGUMENT', `${img.what}: the archive lacks ${role} ${digest}`);
  };
  await need(img.target.digest, 'the image');
  let manifestDesc = img.target;
  if (isIndexType(img.target.mediaType)) {
    const index = parseIndex(await readContent(c, img.target.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }), img.target.mediaType, `${img.what} index ${img.target.digest}`);
    const children = Object.fromEntries(index.manifests.map((m, i) => [`containerd.io/gc.ref.content.m.${i}`, m.digest]));
    await updateContentLabels(c, img.target.digest, children, { signal, lease });
    manifestDesc = selectManifest(index, opts.platform, img.what);
    await need(manifestDesc.digest, 'the host platform manifest');
  } else if (!isManifestType(img.target.mediaType)) {
    throw new AgentError('INVALID_ARGUMENT', `${img.what}: unsupported media type ${img.target.mediaType}`);
  }
  const manifestWhat = `${img.what} manifest ${manifestDesc.digest}`;
  const manifest = parseManifest(await readContent(c, manifestDesc.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }), manifestDesc.mediaType, manifestWhat);
  checkImageLimits(img.names[0] ?? img.what, manifest, opts.limits);
  await need(manifest.config.digest, 'the image config');
  for (const l of manifest.layers) await need(l.digest, 'layer');
  await updateContentLabels(
    c,
    manifestDesc.digest,
    { 'containerd.io/gc.ref.content.config': manifest.config.digest, ...Object.fromEntries(manifest.layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l.digest])) },
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

/**
 * Refuses, before anything is unpacked, to point an existing image record at another digest.
 *
 * @throws AgentError ALREADY_EXISTS naming the record and both digests.
 */
async function refuseOverwrites(c: ContainerdClient, planned: readonly PlannedImage[], signal: AbortSignal): Promise<void> {
  for (const p of planned) {
    for (const name of p.names) {
      const existing = await getImage(c, name, signal);
      if (existing && existing.target.digest !== p.target.digest) {
        throw new AgentError(
          'ALREADY_EXISTS',
          `image ${name} already exists with digest ${existing.target.digest}; the archive's is ${p.target.digest}. Give --force to replace it, or --name for another name`,
        );
      }
    }
  }
}

/** Deletes image records this import created (best effort, own deadline). */
async function deleteImages(c: ContainerdClient, names: readonly string[]): Promise<void> {
  for (const name of names) {
    try {
      await c.call('images', 'Delete', { name, sync: false }, { deadlineMs: CLEANUP_TIMEOUT_MS, what: `delete image ${name}` });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
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
      planned = await planDockerSave(c, contents, file, { lease, signal, counts });
    } else {
      throw invalid(file, 'not an image archive: it has neither index.json (OCI image layout) nor manifest.json (docker save)');
    }
    if (override !== undefined) {
      if (planned.length !== 1) throw new AgentError('INVALID_ARGUMENT', `--name: ${file} holds ${planned.length} images; --name needs exactly one`);
      planned[0]!.names.splice(0, planned[0]!.names.length, override);
    }
    for (const p of planned) {
      if (p.names.length === 0) {
        const tag = p.target.annotations?.[REF_NAME_ANNOTATION];
        throw new AgentError('INVALID_ARGUMENT', `${p.what} has no image name${tag === undefined ? '' : ` (only the tag ${JSON.stringify(tag)})`}; give one with --name REPOSITORY:TAG`);
      }
    }
    if (opts.force !== true) await refuseOverwrites(c, planned, signal);
    const images: ImportedImage[] = [];
    for (const p of planned) images.push({ names: p.names, ...(await prepareImage(c, p, { snapshotter: opts.snapshotter, platform, lease, signal, limits: opts.limits })) });
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

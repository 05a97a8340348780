/**
 * Planning of an image import (import.ts applies the plan): reading the archive's metadata
 * (index.json, docker save's manifest.json), validating it, and deciding which images to make
 * and under which names, before anything is written. Nothing here writes to containerd; the
 * reads are of content the archive reader already stored (under the import's lease).
 */
import { AgentError } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { readContent } from './content-store.js';
import { archivePath, type ArchiveContents, type Compression } from './import-archive.js';
import { getImage } from './image-store.js';
import { MediaType, parseIndex, parseJsonObject, type Descriptor } from '../../../registry/oci.js';
import { parseReference } from '../../../registry/reference.js';
import { MAX_MANIFEST_BYTES } from '../../../registry/registry-client.js';

/** containerd's annotation carrying a full image name in an OCI layout's index.json. */
export const IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';
/** The OCI annotation naming an index.json entry: a tag, or a full reference. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** An image to create: its top descriptor and the names to give it. */
export interface PlannedImage {
  readonly target: Descriptor;
  readonly names: string[];
  /** Where it came from, for messages. */
  readonly what: string;
}

export function invalid(file: string, why: string): AgentError {
  return new AgentError('INVALID_ARGUMENT', `${file}: ${why}`);
}

/** Normalises a name from the archive or the caller; throws INVALID_ARGUMENT naming its source. */
export function imageName(ref: string, source: string): string {
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
export interface DockerManifestEntry {
  readonly config: string;
  readonly repoTags: readonly string[];
  readonly layers: readonly string[];
}

export function parseDockerManifest(bytes: Buffer, file: string): DockerManifestEntry[] {
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
export function resolveLink(contents: ArchiveContents, name: string): string {
  let at = name;
  for (let hops = 0; hops < 16; hops++) {
    const next = contents.links.get(at);
    if (next === undefined) return at;
    at = next;
  }
  return at;
}

/** Layer media types by compression: docker save's own, or OCI's when a layer is zstd (Docker has none for it). */
export const DOCKER_LAYER_TYPES: Readonly<Record<Compression, string>> = {
  gzip: MediaType.dockerLayerGzip,
  none: MediaType.dockerLayer,
  zstd: MediaType.ociLayerZstd,
};
export const OCI_LAYER_TYPES: Readonly<Record<Compression, string>> = {
  gzip: MediaType.ociLayerGzip,
  none: MediaType.ociLayer,
  zstd: MediaType.ociLayerZstd,
};

/**
 * The manifest that stands for one docker save entry: Docker schema 2, or OCI when a layer is
 * zstd-compressed (Docker's media types have none for it).
 */
export function dockerSaveManifest(
  config: { digest: string; size: number },
  layers: readonly { digest: string; size: number; compression: Compression }[],
): { mediaType: string; bytes: Buffer } {
  const oci = layers.some((l) => l.compression === 'zstd');
  const manifest = {
    schemaVersion: 2,
    mediaType: oci ? MediaType.ociManifest : MediaType.dockerManifest,
    config: { mediaType: oci ? MediaType.ociConfig : MediaType.dockerConfig, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: (oci ? OCI_LAYER_TYPES : DOCKER_LAYER_TYPES)[l.compression], digest: l.digest, size: l.size })),
  };
  return { mediaType: manifest.mediaType, bytes: Buffer.from(JSON.stringify(manifest)) };
}

/** Plans the images of an OCI layout (index.json; also what Docker ≥ 25 writes). */
export function planOciLayout(contents: ArchiveContents, file: string, dockerTags: ReadonlyMap<string, readonly string[]>): PlannedImage[] {
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
export async function dockerTagsByManifest(
  c: ContainerdClient,
  contents: ArchiveContents,
  file: string,
  signal: AbortSignal,
): Promise<Map<string, readonly string[]>> {
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

/**
 * Settles the names: `override` (the caller's --name) replaces the archive's for its single
 * image; every image must end up with at least one.
 */
export function settleNames(planned: readonly PlannedImage[], override: string | undefined, file: string): void {
  if (override !== undefined) {
    if (planned.length !== 1)
      throw new AgentError('INVALID_ARGUMENT', `--name: ${file} holds ${planned.length} images; --name needs exactly one`);
    planned[0]!.names.splice(0, planned[0]!.names.length, override);
  }
  for (const p of planned) {
    if (p.names.length === 0) {
      const tag = p.target.annotations?.[REF_NAME_ANNOTATION];
      throw new AgentError(
        'INVALID_ARGUMENT',
        `${p.what} has no image name${tag === undefined ? '' : ` (only the tag ${JSON.stringify(tag)})`}; give one with --name REPOSITORY:TAG`,
      );
    }
  }
}

/**
 * Refuses, before anything is unpacked, to point an existing image record at another digest.
 *
 * @throws AgentError ALREADY_EXISTS naming the record and both digests.
 */
export async function refuseOverwrites(c: ContainerdClient, planned: readonly PlannedImage[], signal: AbortSignal): Promise<void> {
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

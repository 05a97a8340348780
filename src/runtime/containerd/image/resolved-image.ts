/**
 * `ResolvedImage`, what the image service hands to the runtime, and reading one back from the
 * content store for an image that is already local.
 */
import { AgentError, isNotFound } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { readContent } from './content-store.js';
import { chainIds } from '../../../registry/digest.js';
import { getImage } from './image-store.js';
import {
  isIndexType,
  isManifestType,
  parseImageConfig,
  parseIndex,
  parseManifest,
  type Descriptor,
  type ImageManifest,
  type OciImageConfig,
  type Platform,
} from '../../../registry/oci.js';
import { selectManifest } from '../../../registry/platform.js';
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES } from '../../../registry/registry-client.js';
import { snapshotExists } from './unpack.js';

/** An image ready to run: its record's name and target, the host's manifest and its config. */
export interface ResolvedImage {
  /** Full normalised reference = containerd image name. */
  readonly name: string;
  /** Top descriptor of the record (the index for a multi-platform image). */
  readonly target: Descriptor;
  /** Digest of the host platform's manifest. */
  readonly manifestDigest: string;
  readonly configDigest: string;
  /** The parsed image config blob. */
  readonly config: OciImageConfig;
  /** Top chainID: the parent of container snapshots. */
  readonly chainId: string;
}

/** An image's manifest (for the host) with the config that goes with it. */
export interface ImageContent {
  readonly image: ResolvedImage;
  readonly manifest: ImageManifest;
}

/**
 * Builds a ResolvedImage from a manifest and its config bytes, checking that the config's
 * diff_ids match the manifest's layers one to one.
 */
export function describeImage(
  name: string,
  target: Descriptor,
  manifestDigest: string,
  manifest: ImageManifest,
  configBytes: Uint8Array,
): ResolvedImage {
  const config = parseImageConfig(configBytes, `image config ${manifest.config.digest} of ${name}`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `image ${name}: manifest has ${manifest.layers.length} layers, config lists ${diffIds.length} diff_ids`,
    );
  }
  if (diffIds.length === 0) throw new AgentError('FAILED_PRECONDITION', `image ${name} has no layers`);
  const chainId = chainIds(diffIds).at(-1)!;
  return { name, target, manifestDigest, configDigest: manifest.config.digest, config, chainId };
}

/**
 * Reads an image's index (if any), host manifest and config from the content store.
 *
 * @throws AgentError NOT_FOUND when a blob is missing, NOT_FOUND when the index has no entry for
 *   `platform`, FAILED_PRECONDITION for malformed or unsupported content.
 */
export async function readImageContent(
  c: ContainerdClient,
  name: string,
  target: Descriptor,
  opts: { platform: Platform; signal?: AbortSignal | undefined },
): Promise<ImageContent> {
  const { signal } = opts;
  let manifestDesc = target;
  if (isIndexType(target.mediaType)) {
    const index = parseIndex(
      await readContent(c, target.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }),
      target.mediaType,
      `index ${target.digest} of ${name}`,
    );
    manifestDesc = selectManifest(index, opts.platform, name);
  }
  if (!isManifestType(manifestDesc.mediaType)) {
    throw new AgentError('FAILED_PRECONDITION', `image ${name}: unsupported manifest media type ${manifestDesc.mediaType}`);
  }
  const manifest = parseManifest(
    await readContent(c, manifestDesc.digest, { signal, maxBytes: MAX_MANIFEST_BYTES }),
    manifestDesc.mediaType,
    `manifest ${manifestDesc.digest} of ${name}`,
  );
  const configBytes = await readContent(c, manifest.config.digest, { signal, maxBytes: MAX_CONFIG_BYTES });
  return { image: describeImage(name, target, manifestDesc.digest, manifest, configBytes), manifest };
}

/** What is known locally about an image name. */
export interface LocalImage {
  /** The record's target. */
  readonly target: Descriptor;
  /** Set when the index/manifest/config are all readable. */
  readonly content?: ImageContent | undefined;
  /** True when the top snapshot exists (nothing to unpack). */
  readonly unpacked: boolean;
}

/**
 * Loads a local image: the record, its content (when complete enough to read the config) and
 * whether its snapshot chain is unpacked. undefined when there is no record of that name.
 */
export async function loadLocalImage(
  c: ContainerdClient,
  name: string,
  opts: { snapshotter: string; platform: Platform; signal?: AbortSignal | undefined },
): Promise<LocalImage | undefined> {
  const record = await getImage(c, name, opts.signal);
  if (!record) return undefined;
  let content: ImageContent | undefined;
  try {
    content = await readImageContent(c, name, record.target, opts);
  } catch (err) {
    // A record whose blobs are gone (GC'd, half-deleted) is treated as absent content.
    if (isNotFound(err)) return { target: record.target, content: undefined, unpacked: false };
    throw err;
  }
  const unpacked = await snapshotExists(c, opts.snapshotter, content.image.chainId, opts.signal);
  return { target: record.target, content, unpacked };
}

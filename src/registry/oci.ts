/**
 * OCI / Docker schema 2 image formats: media types, descriptors, and checked parsers for
 * indexes, manifests and image configs. Parsed JSON is validated here so that the rest of the
 * image code can trust field types (a registry is outside input).
 */
import { AgentError } from '../errors.js';
import { isSha256Digest } from './digest.js';

/** Media types the agent understands (containerd `images/mediatypes.go`). */
export const MediaType = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNonDistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  ociLayerNonDistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  ociLayerNonDistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
} as const;

/** The Go client's Accept list for resolving, exactly (docs/containerd.md#resolve). */
export const MANIFEST_ACCEPT = [
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.ociIndex,
  '*/*',
].join(', ');

const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerManifestList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest]);
const SCHEMA1_TYPES: ReadonlySet<string> = new Set([MediaType.dockerSchema1, MediaType.dockerSchema1Signed, 'text/plain']);

/**
 * Layer media types containerd 1.6's walking differ applies (docs/containerd.md#unpack); anything
 * else (e.g. `+encrypted`) would fail inside Diff.Apply with a less clear error.
 */
export const LAYER_TYPES: ReadonlySet<string> = new Set([
  MediaType.ociLayer,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
  MediaType.ociLayerNonDistributable,
  MediaType.ociLayerNonDistributableGzip,
  MediaType.ociLayerNonDistributableZstd,
  MediaType.dockerLayer,
  MediaType.dockerLayerGzip,
  MediaType.dockerForeignLayer,
  MediaType.dockerForeignLayerGzip,
]);

/** True for an OCI index or Docker manifest list. */
export const isIndexType = (mediaType: string): boolean => INDEX_TYPES.has(mediaType);
/** True for an OCI or Docker schema 2 image manifest. */
export const isManifestType = (mediaType: string): boolean => MANIFEST_TYPES.has(mediaType);
/** True for Docker schema 1 (and `text/plain`, which the Go client treats as schema 1). */
export const isSchema1Type = (mediaType: string): boolean => SCHEMA1_TYPES.has(mediaType);

/** OS/architecture of an image or index entry. */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string | undefined;
}

/** A content descriptor (camelCase domain form; containerd's wire form is `media_type`). */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
  readonly platform?: Platform | undefined;
}

/** An image index / manifest list. */
export interface ImageIndex {
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
}

/** An image manifest. */
export interface ImageManifest {
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
}

/** The parts of the image config (the `config` object) the runtime uses to build a process. */
export interface OciProcessConfig {
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
  readonly Env?: readonly string[] | null;
  readonly WorkingDir?: string;
  readonly User?: string;
  readonly ExposedPorts?: Readonly<Record<string, unknown>> | null;
  readonly StopSignal?: string;
  readonly Labels?: Readonly<Record<string, string>> | null;
}

/** A parsed image config blob (OCI image-spec `config.md`). */
export interface OciImageConfig {
  readonly architecture?: string;
  readonly os?: string;
  readonly variant?: string;
  readonly config?: OciProcessConfig | null;
  readonly rootfs: { readonly type: string; readonly diff_ids: readonly string[] };
}

type Json = Record<string, unknown>;

function bad(what: string, why: string): AgentError {
  return new AgentError('FAILED_PRECONDITION', `${what}: ${why}`);
}

/** Parses JSON bytes into an object, or throws FAILED_PRECONDITION naming `what`. */
export function parseJsonObject(data: Uint8Array, what: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch (err) {
    throw new AgentError('FAILED_PRECONDITION', `${what}: not valid JSON`, { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(what, 'expected a JSON object');
  return v as Json;
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}

/** Checks one descriptor object from a manifest or index. */
export function parseDescriptor(v: unknown, what: string): Descriptor {
  if (typeof v !== 'object' || v === null) throw bad(what, 'descriptor is not an object');
  const d = v as Json;
  const { mediaType, digest, size, annotations, platform } = d;
  if (typeof mediaType !== 'string' || mediaType === '') throw bad(what, 'descriptor without mediaType');
  if (typeof digest !== 'string' || !isSha256Digest(digest))
    throw bad(what, `descriptor with unsupported digest ${JSON.stringify(digest)}`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw bad(what, `descriptor ${digest} with invalid size`);
  let plat: Platform | undefined;
  if (platform !== undefined && platform !== null) {
    const p = platform as Json;
    if (typeof p['os'] !== 'string' || typeof p['architecture'] !== 'string') throw bad(what, `descriptor ${digest} with invalid platform`);
    plat = { os: p['os'], architecture: p['architecture'], variant: typeof p['variant'] === 'string' ? p['variant'] : undefined };
  }
  return {
    mediaType,
    digest,
    size,
    annotations: isStringRecord(annotations) ? annotations : undefined,
    platform: plat,
  };
}

/**
 * The media type of a manifest body: the header's when it is specific, else the body's own
 * `mediaType`, else sniffed (OCI manifests may omit `mediaType`).
 */
export function detectManifestType(body: Json, headerType: string | undefined): string {
  const h = headerType?.split(';')[0]?.trim();
  if (h !== undefined && (isIndexType(h) || isManifestType(h) || isSchema1Type(h))) return h;
  const own = body['mediaType'];
  if (typeof own === 'string' && own !== '') return own;
  if (body['schemaVersion'] === 1) return MediaType.dockerSchema1;
  if (Array.isArray(body['manifests'])) return MediaType.ociIndex;
  if (typeof body['config'] === 'object' && Array.isArray(body['layers'])) return MediaType.ociManifest;
  return h ?? 'application/octet-stream';
}

/** Refuses Docker schema 1 (deprecated in containerd 1.7, removed in 2.x; docs/containerd.md#resolve). */
export function assertNotSchema1(mediaType: string, ref: string): void {
  if (isSchema1Type(mediaType)) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `image ${ref} uses the Docker schema 1 manifest format (${mediaType}), which is not supported; push it again with a current client (schema 2 or OCI)`,
    );
  }
}

/** Parses an index / manifest list. */
export function parseIndex(data: Uint8Array, mediaType: string, what: string): ImageIndex {
  const j = parseJsonObject(data, what);
  if (!Array.isArray(j['manifests'])) throw bad(what, 'index without a manifests list');
  return { mediaType, manifests: j['manifests'].map((m, i) => parseDescriptor(m, `${what} manifests[${i}]`)) };
}

/** Parses an image manifest. */
export function parseManifest(data: Uint8Array, mediaType: string, what: string): ImageManifest {
  const j = parseJsonObject(data, what);
  if (j['schemaVersion'] === 1) assertNotSchema1(MediaType.dockerSchema1, what);
  if (!Array.isArray(j['layers'])) throw bad(what, 'manifest without a layers list');
  return {
    mediaType,
    config: parseDescriptor(j['config'], `${what} config`),
    layers: j['layers'].map((l, i) => parseDescriptor(l, `${what} layers[${i}]`)),
  };
}

/** Parses an image config and checks `rootfs.diff_ids`. */
export function parseImageConfig(data: Uint8Array, what: string): OciImageConfig {
  const j = parseJsonObject(data, what);
  const rootfs = j['rootfs'] as Json | undefined;
  if (typeof rootfs !== 'object' || !Array.isArray(rootfs['diff_ids'])) throw bad(what, 'image config without rootfs.diff_ids');
  const diffIds: unknown[] = rootfs['diff_ids'];
  for (const d of diffIds) {
    if (typeof d !== 'string' || !isSha256Digest(d)) throw bad(what, `unsupported diff_id ${JSON.stringify(d)}`);
  }
  const cfg = j['config'];
  if (cfg !== undefined && cfg !== null && (typeof cfg !== 'object' || Array.isArray(cfg))) throw bad(what, 'config is not an object');
  const c = (cfg ?? {}) as Json;
  const strArray = (k: string): void => {
    const v = c[k];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.every((x) => typeof x === 'string')))
      throw bad(what, `config.${k} is not a list of strings`);
  };
  strArray('Entrypoint');
  strArray('Cmd');
  strArray('Env');
  for (const k of ['WorkingDir', 'User', 'StopSignal']) {
    if (c[k] !== undefined && typeof c[k] !== 'string') throw bad(what, `config.${k} is not a string`);
  }
  return j as unknown as OciImageConfig;
}

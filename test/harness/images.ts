/**
 * Test images in registries and archives: pushes the images built by
 * test/harness/image-builder.ts to a registry over the raw Registry HTTP API v2 (anonymous, Basic
 * or Bearer-token auth), reads manifests back, and writes images as an OCI-layout tarball or a
 * `docker save`-style tarball.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import {
  buildTestImages,
  imageBlobs,
  manifestFor,
  MEDIA_TYPES,
  type BlobRef,
  type BuiltImage,
  type BuiltImages,
  type ManifestRef,
  type Platform,
} from './image-builder.js';

export { buildTestImages, imageBlobs, manifestFor, MEDIA_TYPES };
export type { BlobRef, BuiltImage, BuiltImages, ManifestRef, Platform };

/** Registry credentials: Basic (username/password, also used at a token realm) or a ready Bearer token. */
export type RegistryCredentials = { readonly username: string; readonly password: string } | { readonly bearer: string };

/** Every manifest type, as containerd's resolver asks for them. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.manifest,
  MEDIA_TYPES.index,
  '*/*',
].join(', ');

export class RegistryError extends Error {
  readonly status: number;
  readonly body: string;
  constructor(message: string, status: number, body: string) {
    super(`${message}: HTTP ${status}${body ? ` ${body.slice(0, 300)}` : ''}`);
    this.name = 'RegistryError';
    this.status = status;
    this.body = body;
  }
}

/** Parses `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (or `Basic realm=…`). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\S+)\s*(.*)$/.exec(header);
  const scheme = (m?.[1] ?? '').toLowerCase();
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (const p of (m?.[2] ?? '').matchAll(re)) {
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme, params };
}

/**
 * One repository of one registry, with the auth dance: on a 401 it answers a Basic challenge with
 * the credentials, or fetches a token from a Bearer challenge's realm (scope
 * `repository:<repo>:push,pull`, Basic-authenticated when credentials are given, anonymous
 * otherwise) and retries once.
 */
export class RegistryRepo {
  private authorization: string | undefined;
  /** Tokens fetched from a realm, for tests that look at them. */
  readonly tokens: string[] = [];

  readonly registryUrl: string;
  readonly repo: string;
  private readonly credentials: RegistryCredentials | undefined;
  /** Actions asked for in a token scope. */
  private readonly actions: string;

  constructor(registryUrl: string, repo: string, credentials?: RegistryCredentials, actions = 'push,pull') {
    this.registryUrl = registryUrl;
    this.repo = repo;
    this.credentials = credentials;
    this.actions = actions;
    if (credentials && 'bearer' in credentials) this.authorization = `Bearer ${credentials.bearer}`;
  }

  /** `method url` with auth; a relative `url` is resolved against the registry. 401 → one retry after auth. */
  async fetch(method: string, url: string, init: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<Response> {
    const target = new URL(url, this.registryUrl);
    const send = (): Promise<Response> => {
      const headers: Record<string, string> = { ...init.headers };
      if (this.authorization) headers['Authorization'] = this.authorization;
      return fetch(target, { method, headers, ...(init.body ? { body: init.body } : {}) });
    };
    const res = await send();
    if (res.status !== 401) return res;
    const challenge = res.headers.get('www-authenticate');
    // A ready Bearer token that is refused, or no way to authenticate: the 401 is the answer.
    if (!challenge || (this.credentials && 'bearer' in this.credentials)) return res;
    if (!(await this.authorize(challenge))) return res;
    await res.body?.cancel();
    return send();
  }

  /** Sets a new Authorization header from a challenge; false when there is nothing new to try. */
  private async authorize(header: string): Promise<boolean> {
    const { scheme, params } = parseChallenge(header);
    const creds = this.credentials && 'username' in this.credentials ? this.credentials : undefined;
    if (scheme === 'basic') {
      if (!creds) return false;
      const next = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      if (next === this.authorization) return false;
      this.authorization = next;
      return true;
    }
    if (scheme !== 'bearer' || !params['realm']) return false;
    const realm = new URL(params['realm']);
    if (params['service']) realm.searchParams.set('service', params['service']);
    const scopes = new Set<string>([`repository:${this.repo}:${this.actions}`]);
    if (params['scope']) for (const s of params['scope'].split(' ')) scopes.add(s);
    for (const s of scopes) realm.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (creds) headers['Authorization'] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    const res = await fetch(realm, { headers });
    const text = await res.text();
    if (!res.ok) throw new RegistryError(`token request to ${realm.origin}${realm.pathname} refused`, res.status, text);
    const body = JSON.parse(text) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError('token response carries no token', res.status, text);
    this.tokens.push(token);
    const next = `Bearer ${token}`;
    if (next === this.authorization) return false;
    this.authorization = next;
    return true;
  }

  /** True when the blob is already in this repository. */
  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.fetch('HEAD', `/v2/${this.repo}/blobs/${digest}`);
    await res.body?.cancel();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new RegistryError(`HEAD blob ${digest} in ${this.repo}`, res.status, '');
  }

  /** Monolithic upload: POST an upload session, then PUT the whole blob to its Location with `digest=`. */
  async uploadBlob(blob: BlobRef): Promise<void> {
    // No explicit Content-Length: fetch sets it, and undici 7 (when it is the global
    // dispatcher) refuses a hand-set one on a bodiless request.
    const start = await this.fetch('POST', `/v2/${this.repo}/blobs/uploads/`, {});
    const startBody = await start.text();
    if (start.status !== 202) throw new RegistryError(`starting an upload to ${this.repo}`, start.status, startBody);
    const location = start.headers.get('location');
    if (!location) throw new RegistryError(`upload to ${this.repo} has no Location`, start.status, startBody);
    const url = new URL(location, this.registryUrl);
    url.searchParams.set('digest', blob.digest);
    const data = await readFile(blob.path);
    const put = await this.fetch('PUT', url.href, { headers: { 'Content-Type': 'application/octet-stream' }, body: data });
    const putBody = await put.text();
    if (put.status !== 201) throw new RegistryError(`uploading ${blob.digest} to ${this.repo}`, put.status, putBody);
  }

  /** PUT a manifest or index under a tag or its digest. */
  async putManifest(blob: BlobRef, reference: string): Promise<string> {
    const data = await readFile(blob.path);
    const res = await this.fetch('PUT', `/v2/${this.repo}/manifests/${reference}`, {
      headers: { 'Content-Type': blob.mediaType },
      body: data,
    });
    const body = await res.text();
    if (res.status !== 201) throw new RegistryError(`PUT manifest ${this.repo}:${reference}`, res.status, body);
    const digest = res.headers.get('docker-content-digest') ?? blob.digest;
    if (digest !== blob.digest) throw new Error(`registry stored ${this.repo}:${reference} as ${digest}, expected ${blob.digest}`);
    return digest;
  }

  /** GET a manifest by tag or digest. */
  async getManifest(reference: string, accept = MANIFEST_ACCEPT): Promise<FetchedManifest> {
    const res = await this.fetch('GET', `/v2/${this.repo}/manifests/${reference}`, { headers: { Accept: accept } });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) throw new RegistryError(`GET manifest ${this.repo}:${reference}`, res.status, body.toString('utf8'));
    return {
      status: res.status,
      digest: res.headers.get('docker-content-digest') ?? '',
      mediaType: (res.headers.get('content-type') ?? '').split(';')[0]!.trim(),
      body,
      json: JSON.parse(body.toString('utf8')) as unknown,
    };
  }
}

export interface FetchedManifest {
  readonly status: number;
  /** `Docker-Content-Digest` header. */
  readonly digest: string;
  /** `Content-Type` without parameters. */
  readonly mediaType: string;
  readonly body: Buffer;
  readonly json: unknown;
}

export interface PushResult {
  /** `<host>/<repo>:<tag>` (host taken from the registry URL). */
  readonly reference: string;
  readonly digest: string;
  readonly mediaType: string;
  /** Blob digests uploaded, and those the registry already had. */
  readonly uploaded: readonly string[];
  readonly skipped: readonly string[];
}

/**
 * Pushes a built image (manifest or index) as `<repo>:<tag>`: blobs not yet present (HEAD) by
 * monolithic upload, child manifests of an index by digest, then the top manifest by tag.
 */
export async function pushImage(
  registryUrl: string,
  image: BuiltImage,
  repo: string,
  tag: string,
  auth?: RegistryCredentials,
): Promise<PushResult> {
  const r = new RegistryRepo(registryUrl, repo, auth);
  const uploaded: string[] = [];
  const skipped: string[] = [];
  const manifestTypes = new Set<string>([
    MEDIA_TYPES.manifest,
    MEDIA_TYPES.index,
    MEDIA_TYPES.dockerManifest,
    MEDIA_TYPES.dockerManifestList,
  ]);
  for (const blob of imageBlobs(image)) {
    if (blob.digest === image.digest) continue;
    if (manifestTypes.has(blob.mediaType)) {
      await r.putManifest(blob, blob.digest);
      continue;
    }
    if (await r.hasBlob(blob.digest)) {
      skipped.push(blob.digest);
    } else {
      await r.uploadBlob(blob);
      uploaded.push(blob.digest);
    }
  }
  const digest = await r.putManifest(image, tag);
  return { reference: `${new URL(registryUrl).host}/${repo}:${tag}`, digest, mediaType: image.mediaType, uploaded, skipped };
}

export interface PushTestImagesOptions {
  readonly auth?: RegistryCredentials;
  /** Repository prefix (default `esb-test`). */
  readonly prefix?: string;
  /** Tag (default `v1`). */
  readonly tag?: string;
  /** Cache dir for the build (default `<repo>/.tmp/test-images`). */
  readonly imagesDir?: string;
  /** Already built images (skips the build/cache look-up). */
  readonly images?: BuiltImages;
}

export interface PushedTestImages {
  /** `<host>/esb-test/worker:v1` */
  readonly worker: string;
  /** `<host>/esb-test/busybox:v1` */
  readonly busybox: string;
  /** `<host>/esb-test/multiarch:v1` (an index) */
  readonly multiarch: string;
  readonly digests: {
    readonly worker: string;
    readonly busybox: string;
    /** The index digest. */
    readonly multiarch: string;
    /** The host platform's manifest inside the index. */
    readonly multiarchHost: string;
  };
  readonly images: BuiltImages;
}

/** Builds (cached) and pushes worker, busybox and multiarch to a registry. */
export async function pushTestImages(
  registry: { readonly url: string; readonly host: string },
  opts: PushTestImagesOptions = {},
): Promise<PushedTestImages> {
  const images = opts.images ?? (await buildTestImages(opts.imagesDir));
  const prefix = opts.prefix ?? 'esb-test';
  const tag = opts.tag ?? 'v1';
  const push = (img: BuiltImage): Promise<PushResult> => pushImage(registry.url, img, `${prefix}/${img.name}`, tag, opts.auth);
  const busybox = await push(images.busybox);
  const worker = await push(images.worker);
  const multiarch = await push(images.multiarch);
  const ref = (img: BuiltImage): string => `${registry.host}/${prefix}/${img.name}:${tag}`;
  return {
    worker: ref(images.worker),
    busybox: ref(images.busybox),
    multiarch: ref(images.multiarch),
    digests: {
      worker: worker.digest,
      busybox: busybox.digest,
      multiarch: multiarch.digest,
      multiarchHost: manifestFor(images.multiarch).digest,
    },
    images,
  };
}

// ---------------------------------------------------------------------------------------------
// Archives

const TAR_MTIME = new Date('2024-01-01T00:00:00Z');

type ArchiveEntry =
  | { readonly name: string; readonly data: Buffer }
  | { readonly name: string; readonly file: string; readonly size: number; readonly gunzip?: boolean };

async function writeTar(outPath: string, entries: readonly ArchiveEntry[]): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(outPath));
  const base = { uid: 0, gid: 0, mtime: TAR_MTIME, mode: 0o644, type: 'file' as const };
  const dirs = new Set<string>();
  try {
    for (const e of entries) {
      const parts = e.name.split('/').slice(0, -1);
      for (let i = 1; i <= parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (dirs.has(dir)) continue;
        dirs.add(dir);
        await new Promise<void>((resolve, reject) => {
          pack.entry({ ...base, name: dir, type: 'directory', mode: 0o755 }, (err) => {
            if (err) reject(err);
            else resolve();
          });
        });
      }
      if ('data' in e) {
        await new Promise<void>((resolve, reject) => {
          pack.entry({ ...base, name: e.name, size: e.data.length }, e.data, (err) => {
            if (err) reject(err);
            else resolve();
          });
        });
      } else {
        await new Promise<void>((resolve, reject) => {
          const w = pack.entry({ ...base, name: e.name, size: e.size }, (err) => {
            if (err) reject(err);
            else resolve();
          });
          const src = createReadStream(e.file);
          (e.gunzip ? pipeline(src, zlib.createGunzip(), w) : pipeline(src, w)).catch(reject);
        });
      }
    }
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await done.catch(() => undefined);
    throw err;
  }
  await done;
}

const hex = (digest: string): string => digest.replace(/^sha256:/, '');

async function blobEntry(b: BlobRef): Promise<ArchiveEntry> {
  return { name: `blobs/sha256/${hex(b.digest)}`, file: b.path, size: (await stat(b.path)).size };
}

export interface OciArchiveOptions {
  /** `org.opencontainers.image.ref.name` annotation on the index entry (e.g. the tag `v1`). */
  readonly refName?: string;
  /** `io.containerd.image.name` annotation (a full reference, e.g. `docker.io/library/x:v1`). */
  readonly imageName?: string;
  /** Write `oci-layout` and `index.json` before the blobs (default: after, the harder case for importers). */
  readonly metadataFirst?: boolean;
}

/** Writes `image` as an OCI image layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`). */
export async function writeOciArchive(image: BuiltImage, outPath: string, opts: OciArchiveOptions = {}): Promise<void> {
  const annotations: Record<string, string> = {};
  if (opts.imageName) annotations['io.containerd.image.name'] = opts.imageName;
  if (opts.refName) annotations['org.opencontainers.image.ref.name'] = opts.refName;
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [
      { mediaType: image.mediaType, digest: image.digest, size: image.size, ...(Object.keys(annotations).length ? { annotations } : {}) },
    ],
  };
  const meta: ArchiveEntry[] = [
    { name: 'oci-layout', data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
    { name: 'index.json', data: Buffer.from(JSON.stringify(index)) },
  ];
  const blobs = await Promise.all(imageBlobs(image).map(blobEntry));
  await writeTar(outPath, opts.metadataFirst ? [...meta, ...blobs] : [...blobs, ...meta]);
}

export interface DockerArchiveOptions {
  /** `RepoTags` of the manifest.json entry, e.g. `['esb-test/worker:v1']`. */
  readonly repoTags: readonly string[];
  /**
   * `blobs` (default): Docker ≥ 25 paths, `blobs/sha256/<hex>` for config and layers.
   * `legacy`: Docker < 25 paths, `<config hex>.json` and `<diffID hex>/layer.tar` (uncompressed).
   */
  readonly layout?: 'blobs' | 'legacy';
  /** Store layers as plain tar (always true for `legacy`; default false: the gzip blobs as built). */
  readonly uncompressed?: boolean;
  /** Also write `oci-layout` and `index.json` as Docker ≥ 25 does (only with `blobs`; default false). */
  readonly withOciIndex?: boolean;
  /** Write manifest.json (and index.json) before the blobs (default: after). */
  readonly metadataFirst?: boolean;
  /** Platform to take from an index (default: the host's). */
  readonly platform?: Platform;
}

/** Writes `image` (an index → one platform's manifest) as a `docker save`-style tarball. */
export async function writeDockerArchive(image: BuiltImage, outPath: string, opts: DockerArchiveOptions): Promise<void> {
  const m = image.kind === 'index' ? manifestFor(image, opts.platform) : image.manifests[0]!;
  const legacy = opts.layout === 'legacy';
  const uncompressed = legacy || (opts.uncompressed ?? false);
  const blobs: ArchiveEntry[] = [];
  const configName = legacy ? `${hex(m.config.digest)}.json` : `blobs/sha256/${hex(m.config.digest)}`;
  blobs.push({ name: configName, file: m.config.path, size: m.config.size });
  const layerNames: string[] = [];
  const seen = new Set<string>();
  for (const l of m.layers) {
    const name = legacy ? `${hex(l.diffId)}/layer.tar` : `blobs/sha256/${hex(uncompressed ? l.diffId : l.digest)}`;
    layerNames.push(name);
    if (seen.has(name)) continue;
    seen.add(name);
    blobs.push(uncompressed ? { name, file: l.path, size: l.uncompressedSize, gunzip: true } : { name, file: l.path, size: l.size });
  }
  const meta: ArchiveEntry[] = [];
  if (opts.withOciIndex && !legacy) {
    // Docker ≥ 25 also writes the manifest itself; an uncompressed variant would need a new manifest, so only gzip here.
    if (uncompressed) throw new Error('withOciIndex needs the gzip layers (uncompressed: false)');
    blobs.push(await blobEntry(m));
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.index,
      manifests: [
        {
          mediaType: m.mediaType,
          digest: m.digest,
          size: m.size,
          ...(opts.repoTags[0]
            ? {
                annotations: {
                  'io.containerd.image.name': opts.repoTags[0],
                  'org.opencontainers.image.ref.name': opts.repoTags[0].split(':').pop() ?? '',
                },
              }
            : {}),
        },
      ],
    };
    meta.push({ name: 'oci-layout', data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) });
    meta.push({ name: 'index.json', data: Buffer.from(JSON.stringify(index)) });
  }
  meta.push({
    name: 'manifest.json',
    data: Buffer.from(JSON.stringify([{ Config: configName, RepoTags: opts.repoTags, Layers: layerNames }])),
  });
  await writeTar(outPath, opts.metadataFirst ? [...meta, ...blobs] : [...blobs, ...meta]);
}

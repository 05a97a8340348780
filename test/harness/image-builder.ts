/**
 * Builds the OCI test images offline (no docker, no internet) from files already on the host:
 *
 * - `busybox`:   Debian's busybox-static with applet symlinks, /etc/passwd and /etc/group.
 * - `worker`:    busybox layer + node layer (this host's node binary and the shared libraries
 *                `ldd` lists for it, at the same paths) + a layer with the RIE-like test worker
 *                (test/fixtures/worker/worker.mjs). Entrypoint `node /worker/worker.mjs`, port 8080.
 * - `multiarch`: an OCI image index: a linux/arm64/v8 manifest (listed first, never run) and the
 *                host's linux/amd64 busybox manifest, both on the same layer.
 *
 * Layers are tar (tar-stream) + gzip level 1, written deterministically (sorted entries, fixed
 * mtime, uid/gid 0), so the same inputs give the same digests. The result is cached under
 * `<outDir>/<key>/` (an OCI layout plus `images.json`), keyed by a hash of the inputs (path, size,
 * mtime and inode of busybox, node and its libraries; the content of the worker and of this script):
 * a second run with unchanged inputs only reads `images.json`.
 *
 * A test library (images.ts pushes what it builds); the command line is
 * scripts/build-test-images.ts: `node --import tsx scripts/build-test-images.ts [outDir]`.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import tar from 'tar-stream';

/** Bump when the image contents or layout change, so old caches are not reused. */
export const BUILD_SCRIPT_VERSION = 3;

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_IMAGES_DIR = path.join(REPO_ROOT, '.tmp', 'test-images');
export const WORKER_SOURCE = path.join(REPO_ROOT, 'test', 'fixtures', 'worker', 'worker.mjs');
const BUSYBOX = '/bin/busybox';

export const MEDIA_TYPES = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');
const CREATED = '2024-01-01T00:00:00Z';
const GZIP_LEVEL = 1;
const APPLETS = [
  '[',
  'awk',
  'basename',
  'cat',
  'chmod',
  'cp',
  'cut',
  'date',
  'dd',
  'df',
  'dirname',
  'du',
  'echo',
  'env',
  'false',
  'find',
  'free',
  'grep',
  'head',
  'hostname',
  'httpd',
  'id',
  'ifconfig',
  'ip',
  'kill',
  'killall',
  'ln',
  'ls',
  'mkdir',
  'mount',
  'mv',
  'nc',
  'nproc',
  'nslookup',
  'pidof',
  'ping',
  'printf',
  'ps',
  'pwd',
  'readlink',
  'rm',
  'rmdir',
  'sed',
  'seq',
  'sh',
  'sleep',
  'sort',
  'stat',
  'tail',
  'tee',
  'test',
  'timeout',
  'top',
  'touch',
  'tr',
  'true',
  'uname',
  'uniq',
  'uptime',
  'usleep',
  'vi',
  'wc',
  'wget',
  'which',
  'whoami',
  'xargs',
  'yes',
];

/** A content-addressed blob stored in the cache (`path` is absolute). */
export interface BlobRef {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly path: string;
}

/** A gzip layer; `diffId` is the sha256 of the uncompressed tar. */
export interface LayerRef extends BlobRef {
  readonly diffId: string;
  readonly uncompressedSize: number;
}

export interface Platform {
  readonly architecture: string;
  readonly os: string;
  readonly variant?: string;
}

/** One image manifest with its config and layers. */
export interface ManifestRef extends BlobRef {
  readonly platform: Platform;
  readonly config: BlobRef;
  readonly layers: readonly LayerRef[];
}

/**
 * A built image. The top blob (`mediaType`, `digest`, `size`, `path`) is a manifest or an index;
 * `manifests` holds that manifest itself, or the index's entries in index order.
 */
export interface BuiltImage extends BlobRef {
  readonly name: string;
  readonly kind: 'manifest' | 'index';
  readonly manifests: readonly ManifestRef[];
}

export interface BuiltImages {
  /** Hash of the inputs; the cache directory's name. */
  readonly key: string;
  /** `<outDir>/<key>`: an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/…`) + `images.json`. */
  readonly dir: string;
  /** True when this call found the images in the cache. */
  readonly cached: boolean;
  readonly busybox: BuiltImage;
  readonly worker: BuiltImage;
  readonly multiarch: BuiltImage;
}

export interface BuildOptions {
  /** Rebuild even if the cache has this key. */
  readonly force?: boolean;
  /** Remove other keys' directories from `outDir` after a build (default true). */
  readonly prune?: boolean;
}

/** Every blob an image needs (layers, configs, child manifests, top), de-duplicated, top last. */
export function imageBlobs(image: BuiltImage): BlobRef[] {
  const seen = new Map<string, BlobRef>();
  for (const m of image.manifests) {
    for (const l of m.layers) seen.set(l.digest, l);
    seen.set(m.config.digest, m.config);
    seen.set(m.digest, m);
  }
  seen.delete(image.digest);
  return [...seen.values(), image];
}

/** The manifest of `image` for a platform (default: this host's linux architecture). */
export function manifestFor(image: BuiltImage, platform: Platform = hostPlatform()): ManifestRef {
  const m = image.manifests.find((x) => x.platform.os === platform.os && x.platform.architecture === platform.architecture);
  if (!m) throw new Error(`${image.name} has no manifest for ${platform.os}/${platform.architecture}`);
  return m;
}

export function hostPlatform(): Platform {
  const arch = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' }[process.arch as string];
  if (!arch) throw new Error(`unsupported architecture ${process.arch}`);
  return arch === 'arm64' ? { architecture: arch, os: 'linux', variant: 'v8' } : { architecture: arch, os: 'linux' };
}

// ---------------------------------------------------------------------------------------------
// Inputs

interface HostFile {
  /** Path inside the image (absolute). */
  readonly target: string;
  /** File whose bytes go there (symlinks resolved). */
  readonly source: string;
}

/** The node binary and the shared libraries it loads, at the paths `ldd` prints. */
function nodeFiles(): HostFile[] {
  const files: HostFile[] = [{ target: '/usr/bin/node', source: realpathSync(process.execPath) }];
  const out = execFileSync('ldd', [process.execPath], { encoding: 'utf8' });
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    const arrow = /=>\s*(\/\S+)/.exec(line);
    const bare = /^\s*(\/\S+)\s+\(/.exec(line);
    const p = arrow?.[1] ?? bare?.[1];
    if (p) libs.add(p);
  }
  if (existsSync('/lib64/ld-linux-x86-64.so.2') && process.arch === 'x64') libs.add('/lib64/ld-linux-x86-64.so.2');
  for (const lib of [...libs].sort()) files.push({ target: lib, source: realpathSync(lib) });
  return files;
}

function busyboxApplets(): string[] {
  const have = new Set(
    execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' })
      .split('\n')
      .map((s) => s.trim()),
  );
  return APPLETS.filter((a) => have.has(a));
}

function inputKey(node: readonly HostFile[]): string {
  const h = createHash('sha256');
  h.update(`esb-test-images v${BUILD_SCRIPT_VERSION} ${process.arch}\n`);
  // This script's own text: an edit that changes the images invalidates the cache even without a version bump.
  h.update(readFileSync(fileURLToPath(import.meta.url)));
  for (const f of [{ target: '/bin/busybox', source: BUSYBOX }, ...node]) {
    const s = statSync(f.source);
    h.update(`${f.target} ${f.source} ${s.size} ${s.mtimeMs} ${s.ino}\n`);
  }
  h.update(readFileSync(WORKER_SOURCE));
  return h.digest('hex').slice(0, 24);
}

// ---------------------------------------------------------------------------------------------
// Layers

type LayerEntry =
  | { readonly type: 'file'; readonly name: string; readonly mode: number; readonly source: string | Buffer }
  | { readonly type: 'directory'; readonly name: string; readonly mode: number }
  | { readonly type: 'symlink'; readonly name: string; readonly linkname: string };

/** Adds every missing parent directory (0755), then sorts by name. */
function normalise(entries: readonly LayerEntry[]): LayerEntry[] {
  const byName = new Map<string, LayerEntry>();
  for (const e of entries) {
    const name = e.name.replace(/^\/+/, '').replace(/\/+$/, '');
    byName.set(name, { ...e, name });
    let dir = path.posix.dirname(name);
    while (dir !== '.' && dir !== '/' && dir !== '') {
      if (!byName.has(dir)) byName.set(dir, { type: 'directory', name: dir, mode: 0o755 });
      dir = path.posix.dirname(dir);
    }
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

class Digester extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

interface BlobStore {
  readonly dir: string;
}

function blobPath(store: BlobStore, digest: string): string {
  return path.join(store.dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
}

async function writeLayer(store: BlobStore, entries: readonly LayerEntry[]): Promise<LayerRef> {
  const tmp = path.join(store.dir, 'blobs', `.layer-${randomBytes(6).toString('hex')}`);
  const pack = tar.pack();
  const raw = new Digester();
  const gz = new Digester();
  const done = pipeline(pack, raw, zlib.createGzip({ level: GZIP_LEVEL }), gz, createWriteStream(tmp));
  const base = { uid: 0, gid: 0, uname: '', gname: '', mtime: FIXED_MTIME };
  for (const e of normalise(entries)) {
    if (e.type === 'directory') {
      await new Promise<void>((resolve, reject) => {
        pack.entry({ ...base, name: e.name, type: 'directory', mode: e.mode }, (err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    } else if (e.type === 'symlink') {
      await new Promise<void>((resolve, reject) => {
        pack.entry({ ...base, name: e.name, type: 'symlink', linkname: e.linkname, mode: 0o777 }, (err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    } else if (Buffer.isBuffer(e.source)) {
      const content = e.source;
      await new Promise<void>((resolve, reject) => {
        pack.entry({ ...base, name: e.name, type: 'file', mode: e.mode, size: content.length }, content, (err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    } else {
      const src = e.source;
      const size = (await stat(src)).size;
      await new Promise<void>((resolve, reject) => {
        const w = pack.entry({ ...base, name: e.name, type: 'file', mode: e.mode, size }, (err) => {
          if (err) reject(err);
          else resolve();
        });
        pipeline(createReadStream(src), w).catch(reject);
      });
    }
  }
  pack.finalize();
  await done;
  const digest = `sha256:${gz.hash.digest('hex')}`;
  const diffId = `sha256:${raw.hash.digest('hex')}`;
  const file = blobPath(store, digest);
  await rename(tmp, file);
  return { mediaType: MEDIA_TYPES.layerGzip, digest, size: gz.bytes, path: file, diffId, uncompressedSize: raw.bytes };
}

async function writeJsonBlob(store: BlobStore, mediaType: string, value: unknown): Promise<BlobRef> {
  const data = Buffer.from(JSON.stringify(value));
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const file = blobPath(store, digest);
  await writeFile(file, data);
  return { mediaType, digest, size: data.length, path: file };
}

const descriptor = (b: BlobRef): { mediaType: string; digest: string; size: number } => ({
  mediaType: b.mediaType,
  digest: b.digest,
  size: b.size,
});

interface ImageConfig {
  readonly Env: readonly string[];
  readonly Entrypoint?: readonly string[];
  readonly Cmd?: readonly string[];
  readonly WorkingDir?: string;
  readonly ExposedPorts?: Record<string, Record<string, never>>;
}

async function writeManifest(
  store: BlobStore,
  platform: Platform,
  cfg: ImageConfig,
  layers: readonly LayerRef[],
  history: readonly string[],
): Promise<ManifestRef> {
  const configJson = {
    created: CREATED,
    architecture: platform.architecture,
    ...(platform.variant ? { variant: platform.variant } : {}),
    os: platform.os,
    config: cfg,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: history.map((h) => ({ created: CREATED, created_by: h })),
  };
  const config = await writeJsonBlob(store, MEDIA_TYPES.config, configJson);
  const manifest = await writeJsonBlob(store, MEDIA_TYPES.manifest, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: descriptor(config),
    layers: layers.map(descriptor),
  });
  return { ...manifest, platform, config, layers };
}

async function writeIndex(store: BlobStore, manifests: readonly ManifestRef[]): Promise<BlobRef> {
  return writeJsonBlob(store, MEDIA_TYPES.index, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: manifests.map((m) => ({ ...descriptor(m), platform: m.platform })),
  });
}

// ---------------------------------------------------------------------------------------------
// Build + cache

interface StoredImages {
  readonly version: number;
  readonly key: string;
  readonly busybox: BuiltImage;
  readonly worker: BuiltImage;
  readonly multiarch: BuiltImage;
}

/** Paths in images.json are relative to the cache dir; these convert both ways. */
function mapPaths<T>(value: T, fn: (p: string) => string): T {
  if (Array.isArray(value)) return value.map((v: unknown) => mapPaths(v, fn)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = k === 'path' && typeof v === 'string' ? fn(v) : mapPaths(v, fn);
    return out as T;
  }
  return value;
}

async function loadCached(dir: string, key: string): Promise<BuiltImages | undefined> {
  let stored: StoredImages;
  try {
    stored = JSON.parse(await readFile(path.join(dir, 'images.json'), 'utf8')) as StoredImages;
  } catch {
    return undefined;
  }
  if (stored.version !== BUILD_SCRIPT_VERSION || stored.key !== key) return undefined;
  const abs = mapPaths(stored, (p) => path.join(dir, p));
  for (const img of [abs.busybox, abs.worker, abs.multiarch]) {
    for (const b of imageBlobs(img)) if (!existsSync(b.path)) return undefined;
  }
  return { key, dir, cached: true, busybox: abs.busybox, worker: abs.worker, multiarch: abs.multiarch };
}

async function build(store: BlobStore, node: readonly HostFile[]): Promise<Omit<StoredImages, 'key' | 'version'>> {
  const host = hostPlatform();
  const applets = busyboxApplets();
  const busyboxLayer = await writeLayer(store, [
    { type: 'directory', name: 'bin', mode: 0o755 },
    { type: 'directory', name: 'dev', mode: 0o755 },
    { type: 'directory', name: 'etc', mode: 0o755 },
    { type: 'directory', name: 'home', mode: 0o755 },
    { type: 'directory', name: 'proc', mode: 0o555 },
    { type: 'directory', name: 'root', mode: 0o700 },
    { type: 'directory', name: 'sys', mode: 0o555 },
    { type: 'directory', name: 'tmp', mode: 0o1777 },
    { type: 'directory', name: 'usr/bin', mode: 0o755 },
    { type: 'directory', name: 'usr/sbin', mode: 0o755 },
    { type: 'directory', name: 'var/tmp', mode: 0o1777 },
    { type: 'file', name: 'bin/busybox', mode: 0o755, source: BUSYBOX },
    ...applets.map((a): LayerEntry => ({ type: 'symlink', name: `bin/${a}`, linkname: 'busybox' })),
    {
      type: 'file',
      name: 'etc/passwd',
      mode: 0o644,
      source: Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
    },
    { type: 'file', name: 'etc/group', mode: 0o644, source: Buffer.from('root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n') },
  ]);
  const nodeLayer = await writeLayer(
    store,
    node.map((f): LayerEntry => ({ type: 'file', name: f.target, mode: 0o755, source: f.source })),
  );
  const workerLayer = await writeLayer(store, [
    { type: 'directory', name: 'worker', mode: 0o755 },
    { type: 'file', name: 'worker/worker.mjs', mode: 0o644, source: WORKER_SOURCE },
  ]);

  const busyboxCfg: ImageConfig = { Env: [PATH_ENV], Cmd: ['/bin/sh'] };
  const bbHistory = ['esb build-test-images: busybox-static + applets, passwd, group'];
  const busyboxManifest = await writeManifest(store, host, busyboxCfg, [busyboxLayer], bbHistory);
  const workerManifest = await writeManifest(
    store,
    host,
    { Env: [PATH_ENV], Entrypoint: ['/usr/bin/node', '/worker/worker.mjs'], WorkingDir: '/worker', ExposedPorts: { '8080/tcp': {} } },
    [busyboxLayer, nodeLayer, workerLayer],
    [
      ...bbHistory,
      `esb build-test-images: node ${process.version} and its shared libraries`,
      'esb build-test-images: test/fixtures/worker/worker.mjs',
    ],
  );
  // The foreign platform comes first in the index, so a client that takes the first entry fails.
  const foreign: Platform =
    host.architecture === 'arm64' ? { architecture: 'amd64', os: 'linux' } : { architecture: 'arm64', os: 'linux', variant: 'v8' };
  const foreignManifest = await writeManifest(store, foreign, busyboxCfg, [busyboxLayer], bbHistory);
  const entries = [foreignManifest, busyboxManifest];
  const index = await writeIndex(store, entries);

  return {
    busybox: { ...busyboxManifest, name: 'busybox', kind: 'manifest', manifests: [busyboxManifest] },
    worker: { ...workerManifest, name: 'worker', kind: 'manifest', manifests: [workerManifest] },
    multiarch: { ...index, name: 'multiarch', kind: 'index', manifests: entries },
  };
}

/**
 * Builds (or finds in the cache) the three test images under `outDir` (default
 * `<repo>/.tmp/test-images`). Safe to call from several processes at once: each builds into its
 * own temp dir and the first rename wins.
 */
export async function buildTestImages(outDir: string = DEFAULT_IMAGES_DIR, opts: BuildOptions = {}): Promise<BuiltImages> {
  const node = nodeFiles();
  const key = inputKey(node);
  const dir = path.join(path.resolve(outDir), key);
  if (!opts.force) {
    const hit = await loadCached(dir, key);
    if (hit) return hit;
  }
  await mkdir(outDir, { recursive: true });
  const tmpDir = path.join(path.resolve(outDir), `.build-${key}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(path.join(tmpDir, 'blobs', 'sha256'), { recursive: true });
    const built = await build({ dir: tmpDir }, node);
    const stored: StoredImages = { version: BUILD_SCRIPT_VERSION, key, ...mapPaths(built, (p) => path.relative(tmpDir, p)) };
    await writeFile(path.join(tmpDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(
      path.join(tmpDir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.index,
        manifests: [built.busybox, built.worker, built.multiarch].map((img) => ({
          ...descriptor(img),
          annotations: { 'org.opencontainers.image.ref.name': img.name },
        })),
      }),
    );
    await writeFile(path.join(tmpDir, 'images.json'), JSON.stringify(stored, null, 2));
    // A forced rebuild, or a damaged copy: replace it (complete copies only appear by rename).
    if (opts.force || !(await loadCached(dir, key))) await rm(dir, { recursive: true, force: true });
    try {
      await rename(tmpDir, dir);
    } catch (err) {
      // Another process finished the same key first: use its copy.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
  if (opts.prune ?? true) await prune(outDir, key);
  const result = await loadCached(dir, key);
  if (!result) throw new Error(`test images in ${dir} are incomplete after the build`);
  return { ...result, cached: false };
}

/** Removes other keys' cache dirs and build dirs older than an hour. */
async function prune(outDir: string, keep: string): Promise<void> {
  for (const name of await readdir(outDir)) {
    if (name === keep) continue;
    const p = path.join(outDir, name);
    if (name.startsWith('.build-')) {
      const s = await stat(p).catch(() => undefined);
      if (!s || Date.now() - s.mtimeMs < 3_600_000) continue;
    } else if (!/^[0-9a-f]{24}$/.test(name)) {
      continue;
    }
    await rm(p, { recursive: true, force: true });
  }
}

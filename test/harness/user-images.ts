/**
 * Test images for the image-user lookup: the worker image built by
 * test/harness/image-builder.ts plus one more layer with the test's own /etc files (regular
 * files, symlinks, FIFOs, character devices) and a config whose `User` the test picks. Built
 * offline into a directory of the test's, deterministic like the base images, and pushed to the
 * stack's registry.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { MEDIA_TYPES, manifestFor, pushImage, type BlobRef, type BuiltImage, type ManifestRef } from './images.js';
import type { LayerRef } from './image-builder.js';

/** One entry of the extra layer (a path inside the image, without the leading /). */
export type UserImageEntry =
  | { readonly type: 'file'; readonly name: string; readonly data: Buffer | string; readonly mode?: number }
  | { readonly type: 'directory'; readonly name: string }
  | { readonly type: 'symlink'; readonly name: string; readonly target: string }
  | { readonly type: 'fifo'; readonly name: string }
  | { readonly type: 'char-device'; readonly name: string; readonly major: number; readonly minor: number };

export interface UserImageSpec {
  /** Repository name under `esb-test/`. */
  readonly name: string;
  /** The image config's `User`. */
  readonly user: string;
  readonly entries: readonly UserImageEntry[];
}

class Digester extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

const MTIME = new Date('2024-01-01T00:00:00Z');

async function addEntry(pack: tar.Pack, e: UserImageEntry): Promise<void> {
  const base = { name: e.name, uid: 0, gid: 0, mtime: MTIME };
  const header: Parameters<tar.Pack['entry']>[0] =
    e.type === 'file'
      ? { ...base, type: 'file', mode: e.mode ?? 0o644, size: Buffer.byteLength(e.data) }
      : e.type === 'directory'
        ? { ...base, type: 'directory', mode: 0o755 }
        : e.type === 'symlink'
          ? { ...base, type: 'symlink', mode: 0o777, linkname: e.target }
          : e.type === 'fifo'
            ? { ...base, type: 'fifo', mode: 0o644 }
            : { ...base, type: 'character-device', mode: 0o666, devmajor: e.major, devminor: e.minor };
  await new Promise<void>((resolve, reject) => {
    const cb = (err?: Error | null): void => {
      if (err) reject(err);
      else resolve();
    };
    if (e.type === 'file') pack.entry(header, Buffer.from(e.data), cb);
    else pack.entry(header, cb);
  });
}

async function writeLayer(dir: string, entries: readonly UserImageEntry[]): Promise<LayerRef> {
  const tmp = path.join(dir, `.layer-${process.pid}-${Date.now()}`);
  const pack = tar.pack();
  const raw = new Digester();
  const gz = new Digester();
  const done = pipeline(pack, raw, zlib.createGzip({ level: 1 }), gz, createWriteStream(tmp));
  // Parent directories first, then the entries in the order given.
  const dirs = new Set<string>();
  for (const e of entries) {
    const parts = e.name.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort()) if (!entries.some((e) => e.name === d)) await addEntry(pack, { type: 'directory', name: d });
  for (const e of entries) await addEntry(pack, e);
  pack.finalize();
  await done;
  const digest = `sha256:${gz.hash.digest('hex')}`;
  const file = path.join(dir, digest.slice('sha256:'.length));
  await rename(tmp, file);
  return {
    mediaType: MEDIA_TYPES.layerGzip,
    digest,
    size: gz.bytes,
    path: file,
    diffId: `sha256:${raw.hash.digest('hex')}`,
    uncompressedSize: raw.bytes,
  };
}

async function writeJson(dir: string, mediaType: string, value: unknown): Promise<BlobRef> {
  const data = Buffer.from(JSON.stringify(value));
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const file = path.join(dir, digest.slice('sha256:'.length));
  await writeFile(file, data);
  return { mediaType, digest, size: data.length, path: file };
}

/** Builds `spec` on top of `worker` (the built worker image) into `dir`. */
export async function buildUserImage(worker: BuiltImage, spec: UserImageSpec, dir: string): Promise<BuiltImage> {
  await mkdir(dir, { recursive: true });
  const base = manifestFor(worker);
  const layer = await writeLayer(dir, spec.entries);
  const baseConfig = JSON.parse(await readFile(base.config.path, 'utf8')) as {
    config: Record<string, unknown>;
    rootfs: { type: string; diff_ids: string[] };
    history?: unknown[];
  };
  const config = await writeJson(dir, MEDIA_TYPES.config, {
    ...baseConfig,
    config: { ...baseConfig.config, User: spec.user },
    rootfs: { type: 'layers', diff_ids: [...baseConfig.rootfs.diff_ids, layer.diffId] },
    history: [...(baseConfig.history ?? []), { created: '2024-01-01T00:00:00Z', created_by: `esb user-images: ${spec.name}` }],
  });
  const layers = [...base.layers, layer];
  const manifestBlob = await writeJson(dir, MEDIA_TYPES.manifest, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  });
  const manifest: ManifestRef = { ...manifestBlob, platform: base.platform, config, layers };
  return { ...manifestBlob, name: spec.name, kind: 'manifest', manifests: [manifest] };
}

/** Builds and pushes `spec` as `<registry host>/esb-test/<name>:v1`; returns that reference. */
export async function pushUserImage(
  registry: { readonly url: string; readonly host: string },
  worker: BuiltImage,
  spec: UserImageSpec,
  dir: string,
): Promise<string> {
  const image = await buildUserImage(worker, spec, path.join(dir, spec.name));
  await pushImage(registry.url, image, `esb-test/${spec.name}`, 'v1');
  return `${registry.host}/esb-test/${spec.name}:v1`;
}

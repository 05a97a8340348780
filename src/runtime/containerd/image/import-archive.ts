/**
 * One streaming pass over an image tarball (`docker save` or an OCI image layout, optionally
 * gzip-compressed) for `esb-agent import`. Entry order is not guaranteed (index.json and
 * manifest.json often come last), so nothing waits for the metadata:
 *
 * - `blobs/sha256/<hex>` entries stream straight into containerd's content store under the
 *   import lease; writeBlob checks each against the digest in its name.
 * - `*.json`, `oci-layout` and `repositories` (small metadata) are kept in memory, capped in
 *   number (MAX_METADATA_ENTRIES), each size and their total (MAX_METADATA_BYTES).
 * - Any other file (a legacy `<id>/layer.tar`, whose digest is unknown until read) is spooled
 *   to a temp file while it is hashed; import.ts writes the ones it needs into containerd.
 *
 * Symlinks (docker's legacy format links repeated layers) are recorded and resolved later.
 * Never holds a layer in memory. Blobs and spooled files together may not exceed `maxBytes`
 * (AGENT_IMAGE_MAX_BYTES), checked on each entry's header before it is read.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { AgentError, errorText } from '../../../errors.js';
import type { ContainerdClient } from '../client.js';
import { writeBlob } from './content-writer.js';
import { SHA256_PREFIX } from '../../../registry/digest.js';
import { MAX_CONFIG_BYTES } from '../../../registry/registry-client.js';

/** How a layer's bytes are compressed, from their first bytes. */
export type Compression = 'gzip' | 'zstd' | 'none';

/** A blob from the archive that is now in containerd's content store. */
export interface StoredBlob {
  readonly digest: string;
  readonly size: number;
  readonly compression: Compression;
  /** False when containerd already had it (nothing was written). */
  readonly written: boolean;
}

/** A non-blob file spooled to disk, with its digest. */
export interface SpooledFile {
  readonly file: string;
  readonly digest: string;
  readonly size: number;
  readonly compression: Compression;
}

/** What one pass over the archive found. */
export interface ArchiveContents {
  /** `blobs/sha256/<hex>` entries, by digest, already in containerd. */
  readonly blobs: ReadonlyMap<string, StoredBlob>;
  /** Small metadata files by archive path (`index.json`, `manifest.json`, `<hex>.json`, …). */
  readonly metadata: ReadonlyMap<string, Buffer>;
  /** Other files by archive path, spooled under the spool dir. */
  readonly spooled: ReadonlyMap<string, SpooledFile>;
  /** Symlinks by archive path → their target, resolved to an archive path. */
  readonly links: ReadonlyMap<string, string>;
}

export interface ReadArchiveOptions {
  readonly client: ContainerdClient;
  readonly lease: string;
  readonly signal: AbortSignal;
  /** Directory for spooled files (the caller removes it). */
  readonly spoolDir: string;
  /** Bytes of blobs and spooled files the archive may bring in all. */
  readonly maxBytes: number;
}

/** Metadata files kept in memory at most (an image needs a handful). */
export const MAX_METADATA_ENTRIES = 1024;
/** Their total size. */
export const MAX_METADATA_BYTES = 64 * 1024 * 1024;
/** Symlinks and hard links recorded at most. */
const MAX_LINKS = 65_536;
/** Blob and spooled entries at most (each may be empty, so the byte bound alone does not cap them). */
const MAX_DATA_ENTRIES = 65_536;

const BLOB_PATH = /^blobs\/sha256\/([a-f0-9]{64})$/;
const METADATA_NAMES = new Set(['oci-layout', 'repositories']);
/** GNU/pax typeflags tar-stream reports for regular files. */
const FILE_TYPES = new Set(['file', 'contiguous-file']);

/** Normalises an archive path: no `./` prefix, no duplicate or trailing slashes. */
export function archivePath(name: string): string {
  return path.posix.normalize(name.replace(/^(\.\/)+/, '')).replace(/\/+$/, '');
}

/** The compression of a blob from its first bytes. */
export function sniffCompression(head: Uint8Array | undefined): Compression {
  if (head === undefined || head.length < 2) return 'none';
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/** True when the file starts with the gzip magic (a `docker save | gzip` tarball). */
async function isGzipFile(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await fh.read(head, 0, 2, 0);
    return bytesRead === 2 && sniffCompression(head) === 'gzip';
  } finally {
    await fh.close();
  }
}

/** Passes bytes through, remembering the first chunk and hashing everything. */
class HashingTap extends Transform {
  readonly hash = createHash('sha256');
  head: Buffer | undefined;
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.head ??= chunk;
    this.size += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }
}

/** Yields the entry's chunks, remembering the first one. */
async function* tapped(entry: AsyncIterable<Buffer>, seen: { head?: Buffer }): AsyncGenerator<Buffer> {
  for await (const chunk of entry) {
    seen.head ??= chunk;
    yield chunk;
  }
}

async function readSmall(entry: AsyncIterable<Buffer>, name: string, size: number): Promise<Buffer> {
  if (size > MAX_CONFIG_BYTES)
    throw new AgentError('INVALID_ARGUMENT', `archive file ${name} is ${size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit for metadata`);
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Reads the whole archive once. Blobs go into containerd under `lease`; everything else is
 * returned. Throws AgentError INVALID_ARGUMENT for a file that is not a (complete) tar archive,
 * FAILED_PRECONDITION when a blob's bytes do not match the digest in its name, containerd's
 * errors otherwise. A blob write that fails leaves no ingest behind; committed blobs stay
 * under the lease, which the caller deletes.
 */
export async function readArchive(file: string, opts: ReadArchiveOptions): Promise<ArchiveContents> {
  const { client, lease, signal, spoolDir } = opts;
  let storedBytes = 0;
  let metadataBytes = 0;
  const tooBig = (what: string, limit: string): AgentError => new AgentError('INVALID_ARGUMENT', `${file}: ${what}, over the ${limit}`);
  const blobs = new Map<string, StoredBlob>();
  const metadata = new Map<string, Buffer>();
  const spooled = new Map<string, SpooledFile>();
  const links = new Map<string, string>();

  let gzip: boolean;
  try {
    gzip = await isGzipFile(file);
  } catch (err) {
    throw new AgentError('INVALID_ARGUMENT', `cannot read ${file}: ${errorText(err)}`, { cause: err });
  }
  const extract = tar.extract();
  const source = createReadStream(file);
  const feeding = (gzip ? pipeline(source, zlib.createGunzip(), extract) : pipeline(source, extract)).catch((err: unknown) => err);
  let spoolCount = 0;
  try {
    for await (const entry of extract) {
      const name = archivePath(entry.header.name);
      const body = entry as AsyncIterable<Buffer>;
      if (entry.header.type === 'symlink' || entry.header.type === 'link') {
        if (links.size >= MAX_LINKS) throw tooBig(`more than ${MAX_LINKS} links`, 'limit for an image archive');
        const target = entry.header.linkname;
        // Symlinks are relative to their directory, hard links to the archive root.
        links.set(name, archivePath(entry.header.type === 'symlink' ? path.posix.join(path.posix.dirname(name), target) : target));
        entry.resume();
        continue;
      }
      if (!FILE_TYPES.has(entry.header.type)) {
        entry.resume();
        continue;
      }
      const size = entry.header.size;
      const blob = BLOB_PATH.exec(name);
      const metadataEntry = !blob && (name.endsWith('.json') || METADATA_NAMES.has(name));
      if (!metadataEntry) {
        if (blobs.size + spooled.size >= MAX_DATA_ENTRIES)
          throw tooBig(`more than ${MAX_DATA_ENTRIES} blob or layer files`, 'limit for an image archive');
        storedBytes += size;
        if (storedBytes > opts.maxBytes)
          throw tooBig(`its blobs and layers hold more than ${opts.maxBytes} bytes`, 'AGENT_IMAGE_MAX_BYTES limit');
      } else {
        metadataBytes += size;
        if (metadata.size >= MAX_METADATA_ENTRIES)
          throw tooBig(`more than ${MAX_METADATA_ENTRIES} metadata files`, 'limit for an image archive');
        if (metadataBytes > MAX_METADATA_BYTES)
          throw tooBig(`its metadata files hold more than ${MAX_METADATA_BYTES} bytes`, 'limit for an image archive');
      }
      if (blob) {
        const digest = SHA256_PREFIX + blob[1]!;
        const seen: { head?: Buffer } = {};
        const outcome = await writeBlob(client, {
          ref: `import-${digest}`,
          desc: { mediaType: 'application/octet-stream', digest, size },
          labels: {},
          lease,
          signal,
          open: () => Promise.resolve({ offset: 0, body: tapped(body, seen), destroy: () => undefined }),
        });
        if (outcome === 'exists') {
          // Not read by writeBlob: read it here (for its first bytes) so the pass goes on.
          for await (const _ of tapped(body, seen)) {
            // draining
          }
          // Keep the existing blob (and any of its content) safe until the image record exists.
          await client.call(
            'leases',
            'AddResource',
            { id: lease, resource: { id: digest, type: 'content' } },
            { signal, what: `add content ${digest} to lease ${lease}` },
          );
        }
        blobs.set(digest, { digest, size, compression: sniffCompression(seen.head), written: outcome === 'committed' });
      } else if (metadataEntry) {
        metadata.set(name, await readSmall(body, name, size));
      } else {
        const spool = path.join(spoolDir, `file-${spoolCount++}`);
        const tap = new HashingTap();
        await pipeline(Readable.from(body), tap, createWriteStream(spool));
        spooled.set(name, {
          file: spool,
          digest: SHA256_PREFIX + tap.hash.digest('hex'),
          size: tap.size,
          compression: sniffCompression(tap.head),
        });
      }
    }
  } catch (err) {
    extract.destroy();
    source.destroy();
    await feeding;
    throw archiveError(err, file);
  }
  const feedError = await feeding;
  if (feedError !== undefined) throw archiveError(feedError, file);
  return { blobs, metadata, spooled, links };
}

/** AgentErrors pass through; tar/gzip failures say the file is not a usable archive. */
function archiveError(err: unknown, file: string): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError('INVALID_ARGUMENT', `${file} is not a readable tar archive (${errorText(err)})`, { cause: err });
}

/** Opens a spooled file as a blob source for writeBlob. */
export function spooledSource(s: SpooledFile): () => Promise<{ offset: number; body: AsyncIterable<Uint8Array>; destroy(): void }> {
  return () => {
    const stream = createReadStream(s.file);
    return Promise.resolve({ offset: 0, body: stream, destroy: () => stream.destroy() });
  };
}

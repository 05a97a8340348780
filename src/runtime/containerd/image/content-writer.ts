/**
 * Writes one blob into containerd's content store over the `Content.Write` bidi stream, the
 * way docs/containerd.md#content-write describes it:
 *
 * 1. STAT with the ingest ref, `total` and `expected` → ALREADY_EXISTS (done), `offset ==
 *    total` (commit only), `0 < offset < total` (resume from there), or UNAVAILABLE "ref …
 *    locked" (another writer holds it: back off and retry).
 * 2. WRITE in 1 MiB chunks, each carrying the current offset (an offset of 0 would truncate the
 *    ingest), awaiting each reply.
 * 3. COMMIT with the expected digest, size and the blob's labels, then half-close.
 *
 * The bytes are hashed and counted on the way (DigestVerifier) and checked before COMMIT;
 * containerd checks again at COMMIT. A failed or abandoned write aborts its ingest.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, abortError, hasCode, isAlreadyExists, throwIfAborted } from '../../../errors.js';
import { fromContainerdError, type ContainerdClient } from '../client.js';
import type { WriteContentRequest } from '../../../gen/containerd/containerd/services/content/v1/WriteContentRequest.js';
import type { WriteContentResponse__Output } from '../../../gen/containerd/containerd/services/content/v1/WriteContentResponse.js';
import { DigestVerifier } from '../../../registry/digest.js';
import type { Descriptor } from '../../../registry/oci.js';

/** The Go client's write buffer (docs/containerd.md#content-write step 3). */
export const WRITE_CHUNK_BYTES = 1024 * 1024;
/** Backoff for a locked ref: the ceiling doubles from 16 ms to about 2 s, like the Go client. */
const LOCK_BACKOFF_START_MS = 16;
const LOCK_BACKOFF_MAX_MS = 2048;
/** Bound on cleanup calls, which run after the caller's signal may have fired. */
const CLEANUP_TIMEOUT_MS = 10_000;

/** A source of the blob's bytes from a given offset (the registry may restart at 0). */
export type BlobSource = (
  offset: number,
) => Promise<{ offset: number; body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>; destroy(): void }>;

/** What to write, where, and under which lease. */
export interface WriteBlobOptions {
  /** Ingest ref, e.g. `layer-<digest>` (containerd's MakeRefKey). */
  readonly ref: string;
  readonly desc: Descriptor;
  /**
   * Labels stored on the blob at COMMIT; a function is called just before COMMIT (after `open`,
   * if it ran), so labels that depend on the bytes can be computed from them.
   */
  readonly labels: Readonly<Record<string, string>> | (() => Readonly<Record<string, string>>);
  readonly lease: string;
  readonly signal: AbortSignal;
  /** Opens the bytes; called only when something has to be written. */
  readonly open: BlobSource;
  /** Called with the size of each chunk written (progress, byte counters). */
  readonly onBytes?: (n: number) => void;
}

/** What writeBlob did: `exists` = already committed here (labels not applied), else committed. */
export type WriteOutcome = 'exists' | 'committed';

/** The ingest ref containerd's Go client would use for a descriptor of this kind. */
export function ingestRef(kind: 'index' | 'manifest' | 'config' | 'layer' | 'unknown', digest: string): string {
  return `${kind}-${digest}`;
}

/**
 * Another stream holds this ingest ref. containerd reports it only as text under UNAVAILABLE
 * (`ref … locked for …`, docs/containerd.md#content-write); a down daemon or registry is UNAVAILABLE too,
 * without that text, and is neither retried nor mistaken for a lock.
 */
function isRefLocked(err: unknown): boolean {
  return hasCode(err, 'UNAVAILABLE') && / locked( |$)/.test(err.message);
}

/** Reads `aborted` through a call, so type narrowing from an earlier check does not stick across awaits. */
const isAborted = (signal: AbortSignal): boolean => signal.aborted;

/** One request/response exchange at a time over a Write stream. */
class WriteSession {
  readonly #call: ClientDuplexStream<WriteContentRequest, WriteContentResponse__Output>;
  readonly #it: AsyncIterator<WriteContentResponse__Output>;
  readonly #what: string;

  constructor(call: ClientDuplexStream<WriteContentRequest, WriteContentResponse__Output>, what: string) {
    this.#call = call;
    this.#it = (call as AsyncIterable<WriteContentResponse__Output>)[Symbol.asyncIterator]();
    this.#what = what;
  }

  async send(req: WriteContentRequest): Promise<WriteContentResponse__Output> {
    this.#call.write(req);
    let r: IteratorResult<WriteContentResponse__Output>;
    try {
      r = await this.#it.next();
    } catch (err) {
      throw fromContainerdError(err, this.#what);
    }
    if (r.done === true) throw new AgentError('INTERNAL', `${this.#what}: containerd closed the write stream early`);
    return r.value;
  }

  /** Half-closes and waits for the server's end of stream. */
  async close(): Promise<void> {
    this.#call.end();
    try {
      while ((await this.#it.next()).done !== true) {
        // no more replies are expected after COMMIT; drain any
      }
    } catch (err) {
      throw fromContainerdError(err, this.#what);
    }
  }

  cancel(): void {
    this.#call.cancel();
  }
}

/**
 * Writes a blob unless it is already committed in this namespace.
 *
 * @returns 'exists' when containerd already had it (its labels were not touched; the caller
 *   updates them), 'committed' when this call committed it with `labels`.
 * @throws AgentError FAILED_PRECONDITION on a digest/size mismatch; the source's errors
 *   (registry NOT_FOUND, UNAVAILABLE, ...); CANCELLED/DEADLINE_EXCEEDED on abort.
 *   A failed write leaves no ingest behind.
 */
export async function writeBlob(c: ContainerdClient, opts: WriteBlobOptions): Promise<WriteOutcome> {
  let ceiling = LOCK_BACKOFF_START_MS;
  for (;;) {
    try {
      return await writeOnce(c, opts);
    } catch (err) {
      if (!isRefLocked(err) || isAborted(opts.signal)) throw err;
      await sleep(randomInt(ceiling) + 1, undefined, { signal: opts.signal }).catch(() => undefined);
      throwIfAborted(opts.signal, `write ${opts.ref}`);
      ceiling = Math.min(ceiling * 2, LOCK_BACKOFF_MAX_MS);
    }
  }
}

async function writeOnce(c: ContainerdClient, opts: WriteBlobOptions): Promise<WriteOutcome> {
  const { ref, desc, signal } = opts;
  const what = `write ${ref}`;
  throwIfAborted(signal, what);
  const call = c.svc.content.Write(c.metadata({ lease: opts.lease }));
  const session = new WriteSession(call, what);
  const onAbort = (): void => {
    session.cancel();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  let source: Awaited<ReturnType<BlobSource>> | undefined;
  let started = false;
  try {
    let stat: WriteContentResponse__Output;
    try {
      stat = await session.send({ action: 'STAT', ref, total: desc.size, expected: desc.digest });
    } catch (err) {
      if (isAlreadyExists(err)) return 'exists';
      throw err;
    }
    started = true;
    let offset = Number(stat.offset);
    if (offset !== desc.size) {
      // Fresh ingest (0) or one left by an earlier attempt (resume from its offset, when the
      // registry honours a Range; otherwise restart at 0, which truncates the ingest).
      source = await opts.open(offset);
      const verifier =
        source.offset === offset && offset > 0 ? undefined : new DigestVerifier(desc.digest, desc.size, `blob ${desc.digest}`);
      offset = source.offset;
      // Bytes are gathered into WRITE_CHUNK_BYTES messages; each WRITE waits for its reply.
      const buf = Buffer.allocUnsafe(WRITE_CHUNK_BYTES);
      let filled = 0;
      const flush = async (): Promise<void> => {
        if (filled === 0) return;
        const data = Buffer.from(buf.subarray(0, filled));
        filled = 0;
        const res = await session.send({ action: 'WRITE', offset, data });
        offset += data.length;
        if (Number(res.offset) !== offset)
          throw new AgentError('INTERNAL', `${what}: containerd is at offset ${res.offset}, expected ${offset}`);
        opts.onBytes?.(data.length);
      };
      for await (const chunk of source.body) {
        throwIfAborted(signal, what);
        verifier?.update(chunk);
        if (verifier === undefined && offset + filled + chunk.byteLength > desc.size) {
          throw new AgentError(
            'FAILED_PRECONDITION',
            `blob ${desc.digest}: body is larger than the ${desc.size} bytes its descriptor declares`,
          );
        }
        let at = 0;
        while (at < chunk.byteLength) {
          const n = Math.min(chunk.byteLength - at, WRITE_CHUNK_BYTES - filled);
          buf.set(chunk.subarray(at, at + n), filled);
          filled += n;
          at += n;
          if (filled === WRITE_CHUNK_BYTES) await flush();
        }
      }
      await flush();
      throwIfAborted(signal, what);
      // A resumed write cannot re-hash the part containerd already holds; the COMMIT check
      // below (containerd hashes the whole ingest) covers it.
      verifier?.verify();
      if (offset !== desc.size)
        throw new AgentError('FAILED_PRECONDITION', `blob ${desc.digest}: got ${offset} bytes, descriptor declares ${desc.size}`);
    }
    try {
      const labels = typeof opts.labels === 'function' ? opts.labels() : opts.labels;
      await session.send({ action: 'COMMIT', offset, total: desc.size, expected: desc.digest, labels: { ...labels } });
    } catch (err) {
      // Another writer committed the same content meanwhile.
      if (isAlreadyExists(err)) return 'exists';
      throw err;
    }
    await session.close();
    return 'committed';
  } catch (err) {
    session.cancel();
    source?.destroy();
    // Drop our partial ingest so a failed pull leaves nothing behind (docs/contract.md#rules); never one that
    // another writer holds.
    if (started && !isRefLocked(err)) await abortIngest(c, ref);
    if (isAborted(signal) && !hasCode(err, 'FAILED_PRECONDITION')) throw abortError(signal, what);
    throw err instanceof AgentError ? err : fromContainerdError(err, what);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Drops an ingest (best effort, own deadline): a failed pull must not leave one behind. */
export async function abortIngest(c: ContainerdClient, ref: string): Promise<void> {
  try {
    await c.call('content', 'Abort', { ref }, { deadlineMs: CLEANUP_TIMEOUT_MS, what: `abort ingest ${ref}` });
  } catch {
    // NOT_FOUND (nothing written yet) or containerd gone: the lease's expiry covers the rest
  }
}

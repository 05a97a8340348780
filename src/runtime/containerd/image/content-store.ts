/**
 * Small leaves over containerd's content store: Info (does a blob exist here?), label updates
 * (GC references, docs/containerd.md#gc-labels) and whole-blob reads through the `Content.Read`
 * server stream, for manifests and configs of local images.
 */
import { AgentError, abortError, isNotFound } from '../../../errors.js';
import { fromContainerdError, type ContainerdClient } from '../client.js';
import type { ReadContentResponse__Output } from '../../../gen/containerd/containerd/services/content/v1/ReadContentResponse.js';

/** Label prefix of the registry/repository a blob came from (host without port). */
export const DISTRIBUTION_SOURCE_PREFIX = 'containerd.io/distribution.source.';
/** containerd keeps label key+value within 4096 bytes; the Go client skips longer ones. */
export const MAX_LABEL_BYTES = 4096;

/** A committed blob as containerd describes it. */
export interface ContentInfo {
  readonly digest: string;
  readonly size: number;
  readonly labels: Readonly<Record<string, string>>;
}

/** Per-call options of the content leaves. */
export interface ContentCallOptions {
  readonly signal?: AbortSignal | undefined;
  readonly lease?: string | undefined;
}

/** Content.Info; undefined when the blob is not committed in this namespace. */
export async function contentInfo(c: ContainerdClient, digest: string, opts: ContentCallOptions = {}): Promise<ContentInfo | undefined> {
  try {
    const res = await c.call('content', 'Info', { digest }, { signal: opts.signal, what: `content info ${digest}` });
    if (!res.info) return undefined;
    return { digest: res.info.digest, size: Number(res.info.size), labels: res.info.labels };
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Sets (only) the given labels on a blob with `Content.Update` and a `labels.<key>` field mask,
 * leaving its other labels alone (docs/containerd.md#gc-labels).
 */
export async function updateContentLabels(
  c: ContainerdClient,
  digest: string,
  labels: Readonly<Record<string, string>>,
  opts: ContentCallOptions = {},
): Promise<void> {
  const paths = Object.keys(labels).map((k) => `labels.${k}`);
  if (paths.length === 0) return;
  await c.call(
    'content',
    'Update',
    { info: { digest, labels: { ...labels } }, update_mask: { paths } },
    { signal: opts.signal, lease: opts.lease, what: `label content ${digest}` },
  );
}

/**
 * The value of a `distribution.source` label after adding `repository`: the comma-joined,
 * sorted set of repositories (containerd's `AppendDistributionSourceLabel`).
 */
export function mergeDistributionSource(existing: string | undefined, repository: string): string {
  const repos = new Set((existing ?? '').split(',').filter((r) => r !== ''));
  repos.add(repository);
  return [...repos].sort().join(',');
}

/** Drops labels whose key+value exceed containerd's limit (the Go client skips them too). */
export function withinLabelLimit(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([k, v]) => Buffer.byteLength(k) + Buffer.byteLength(v) <= MAX_LABEL_BYTES));
}

/** Default bound for reading a small blob. */
const READ_TIMEOUT_MS = 30_000;

/**
 * Reads a whole committed blob (`Content.Read`), refusing more than `maxBytes`.
 *
 * @throws AgentError NOT_FOUND when the blob is not in this namespace; FAILED_PRECONDITION
 *   over the size cap; CANCELLED/DEADLINE_EXCEEDED on abort.
 */
export function readContent(
  c: ContainerdClient,
  digest: string,
  opts: { signal?: AbortSignal | undefined; maxBytes: number },
): Promise<Buffer> {
  const what = `read content ${digest}`;
  const { signal, maxBytes } = opts;
  if (signal?.aborted) return Promise.reject(abortError(signal, what));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const finish = (err: AgentError | undefined): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, total));
    };
    const stream = c.svc.content.Read({ digest, offset: 0, size: 0 }, c.metadata(), { deadline: Date.now() + READ_TIMEOUT_MS });
    const onAbort = (): void => {
      stream.cancel();
      finish(abortError(signal!, what));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('data', (res: ReadContentResponse__Output) => {
      total += res.data.length;
      if (total > maxBytes) {
        stream.cancel();
        finish(new AgentError('FAILED_PRECONDITION', `${what}: larger than the ${maxBytes}-byte limit`));
        return;
      }
      chunks.push(res.data);
    });
    stream.on('error', (err) => {
      finish(fromContainerdError(err, what));
    });
    stream.on('end', () => {
      finish(undefined);
    });
  });
}

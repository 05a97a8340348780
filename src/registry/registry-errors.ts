/**
 * Converts registry HTTP outcomes into AgentErrors (docs/errors.md#conventions: convert at the edge). Codes
 * follow the contract (docs/errors.md#codes): image or blob 404 → NOT_FOUND, 401/403 → PERMISSION_DENIED,
 * unreachable / 5xx / 429 → UNAVAILABLE (the gateway retries those), a slow registry →
 * DEADLINE_EXCEEDED, the caller's abort → CANCELLED or DEADLINE_EXCEEDED per its reason.
 */
import type { Readable } from 'node:stream';
import { AgentError, abortError, errnoCode } from '../errors.js';

/** Error codes of undici and the OS that mean "did not answer in time". */
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/**
 * Error codes of the distribution spec (and distribution's own extras). Only these are
 * repeated from a registry's answer: its body is remote text and may carry anything (a
 * loopback admin page, a token), so neither messages nor raw bytes go back to the caller.
 */
export const DISTRIBUTION_ERROR_CODES: ReadonlySet<string> = new Set([
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_UNVERIFIED',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'TAG_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'UNKNOWN',
  'UNAVAILABLE',
  'RANGE_INVALID',
  'PAGINATION_NUMBER_INVALID',
]);

/** The known codes of a registry's JSON error body (`{"errors":[{"code":...}]}`), at most 3. */
export function registryErrorCodes(body: Buffer | undefined): string[] {
  if (!body || body.length === 0) return [];
  try {
    const j = JSON.parse(body.toString('utf8')) as { errors?: unknown };
    if (!Array.isArray(j.errors)) return [];
    const codes = j.errors.map((e: unknown) => (typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined));
    return [...new Set(codes.filter((c): c is string => typeof c === 'string' && DISTRIBUTION_ERROR_CODES.has(c)))].slice(0, 3);
  } catch {
    return [];
  }
}

/** The text of a network-level failure, including the errno code (AggregateErrors have no message). */
function causeText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = errnoCode(err);
  const msg = err.message !== '' ? err.message : err instanceof AggregateError ? err.errors.map((e) => causeText(e)).join(', ') : '';
  return code !== undefined && !msg.includes(code) ? `${code} ${msg}`.trim() : msg;
}

/**
 * A failure before any response (connect refused, DNS, TLS, reset, timeout, abort).
 * `what` names the operation ("resolve 127.0.0.1:5000/fn:latest").
 */
export function networkError(err: unknown, registry: string, what: string, signal: AbortSignal): AgentError {
  if (err instanceof AgentError) return err;
  if (signal.aborted) return abortError(signal, what);
  const code = errnoCode(err) ?? '';
  if (TIMEOUT_CODES.has(code)) {
    return new AgentError('UNAVAILABLE', `${what}: registry ${registry} did not answer in time (${causeText(err)})`, { cause: err });
  }
  return new AgentError('UNAVAILABLE', `${what}: registry ${registry} unreachable: ${causeText(err)}`, { cause: err });
}

/** What a non-success HTTP status means; `notFound` is the message for a 404. */
export function statusError(status: number, body: Buffer | undefined, registry: string, what: string, notFound: string): AgentError {
  const codes = registryErrorCodes(body);
  const answer = `HTTP ${status}${codes.length > 0 ? ` ${codes.join(', ')}` : ''}`;
  if (status === 404) return new AgentError('NOT_FOUND', `${notFound} (${answer})`);
  if (status === 401 || status === 403)
    return new AgentError('PERMISSION_DENIED', `${what}: registry ${registry} denied access (${answer})`);
  if (status === 429) return new AgentError('UNAVAILABLE', `${what}: registry ${registry} is rate-limiting requests (${answer})`);
  if (status >= 500) return new AgentError('UNAVAILABLE', `${what}: registry ${registry} failed (${answer})`);
  return new AgentError('FAILED_PRECONDITION', `${what}: registry ${registry} answered ${answer}`);
}

/**
 * Reads a whole response body, refusing more than `maxBytes` (manifests are capped at about
 * 4 MiB, docs/containerd.md#resolve). The body is destroyed on overflow so the socket is freed.
 */
export async function readCapped(body: Readable, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      body.destroy();
      throw new AgentError('FAILED_PRECONDITION', `${what}: larger than the ${maxBytes}-byte limit`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

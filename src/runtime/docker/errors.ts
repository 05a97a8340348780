/**
 * Docker Engine API failures → AgentError codes (docs/errors.md#codes). Pure functions, so every mapping is
 * unit-tested against the messages dockerd really sends (test/unit/runtime/docker-errors.test.ts).
 * The reference agent turned all of these into Internal (docs/go-agent.md#w12); each gets its true code here.
 */
import { AgentError, type ErrorCode } from '../../errors.js';

/** Engine API error bodies are `{"message": "..."}`; anything else is shown as text. */
export function engineMessage(body: string): string {
  try {
    const j = JSON.parse(body) as unknown;
    if (typeof j === 'object' && j !== null && typeof (j as { message?: unknown }).message === 'string')
      return (j as { message: string }).message;
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 500);
}

/** Registry failures dockerd reports inside a 500 (or a progress-stream error line). */
const REGISTRY_DENIED =
  /unauthorized|authentication required|no basic auth credentials|access.* denied|denied: |forbidden|incorrect username or password/i;
const REGISTRY_MISSING = /manifest unknown|not found|repository does not exist|name unknown|no matching manifest/i;
const REGISTRY_DOWN =
  /connection refused|no such host|i\/o timeout|timeout exceeded|TLS handshake timeout|connection reset|server misbehaving|network is unreachable|toomanyrequests|503 Service Unavailable|502 Bad Gateway|unexpected EOF|dial tcp/i;

/** The code of an Engine API error status with dockerd's message. */
export function engineErrorCode(status: number, message: string): ErrorCode {
  switch (status) {
    case 400:
      return 'INVALID_ARGUMENT';
    case 401:
    case 403:
      return 'PERMISSION_DENIED';
    case 404:
      return 'NOT_FOUND';
    case 409:
      // "Conflict. The container name "/x" is already in use" vs. state conflicts
      // ("removal ... already in progress", "container is paused").
      return /already in use|already exists/i.test(message) ? 'ALREADY_EXISTS' : 'FAILED_PRECONDITION';
    case 501:
      return 'UNIMPLEMENTED';
    case 502:
    case 503:
    case 504:
      return 'UNAVAILABLE';
    default:
      return 'INTERNAL';
  }
}

/**
 * The code of a failed pull: an HTTP error of `/images/create` (before the stream starts) or an
 * `error` line of its progress stream (status 0). dockerd wraps registry answers in a 500, so
 * the message decides.
 */
export function pullErrorCode(status: number, message: string): ErrorCode {
  if (status === 404) return 'NOT_FOUND';
  if (REGISTRY_DENIED.test(message)) return 'PERMISSION_DENIED';
  if (REGISTRY_DOWN.test(message) || /\b(?:HTTP|status(?: code)?:?) ?(?:5\d\d|429)\b/i.test(message)) return 'UNAVAILABLE';
  if (REGISTRY_MISSING.test(message)) return 'NOT_FOUND';
  if (status === 400) return 'INVALID_ARGUMENT';
  return status === 0 ? 'INTERNAL' : engineErrorCode(status, message);
}

/** Distribution error codes as dockerd spells them in its messages (`manifest unknown: ...`). */
const DOCKERD_REGISTRY_CODES: readonly [RegExp, string][] = [
  [/\bmanifest unknown\b/i, 'MANIFEST_UNKNOWN'],
  [/\bname unknown\b/i, 'NAME_UNKNOWN'],
  [/\bblob unknown\b/i, 'BLOB_UNKNOWN'],
  [/\bunauthorized\b/i, 'UNAUTHORIZED'],
  [/\bdenied\b/i, 'DENIED'],
  [/\btoomanyrequests\b/i, 'TOOMANYREQUESTS'],
];

const CLASS_TEXT: Partial<Record<ErrorCode, string>> = {
  NOT_FOUND: 'image not found in the registry',
  PERMISSION_DENIED: 'registry denied access',
  UNAVAILABLE: 'registry unreachable or failing',
  INVALID_ARGUMENT: 'dockerd refused the reference',
};

/**
 * The AgentError of a failed pull. dockerd's message may quote the registry's answer (a
 * non-JSON error body is embedded verbatim), so only what is recognised goes back: the class,
 * an HTTP status dockerd names, and the distribution error codes it spells out. The message
 * itself belongs in the debug log.
 */
export function pullError(what: string, status: number, message: string): AgentError {
  const code = pullErrorCode(status, message);
  const parts: string[] = [];
  const http = /\b(?:status(?: code)?:?|HTTP) ?([1-5]\d\d)\b/i.exec(message);
  if (http) parts.push(`HTTP ${http[1]}`);
  const codes = DOCKERD_REGISTRY_CODES.filter(([re]) => re.test(message)).map(([, c]) => c);
  parts.push(...codes);
  const detail = parts.length > 0 ? ` (${parts.join(', ')})` : '';
  return new AgentError(
    code,
    `${what}: ${CLASS_TEXT[code] ?? 'dockerd could not pull the image'}${detail}; dockerd's message is in the agent's debug log`,
  );
}

/** Socket-level failures before or while talking to dockerd: the daemon is not there. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'EACCES',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

/** True for an error that means dockerd could not be reached (or hung up). */
export function isUnreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) return true;
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== err && isUnreachable(cause);
}

/** An AgentError for dockerd's answer `status` + `body` to `what`. */
export function engineError(what: string, status: number, body: string): AgentError {
  const message = engineMessage(body);
  return new AgentError(engineErrorCode(status, message), `${what}: dockerd answered ${status}: ${message}`);
}

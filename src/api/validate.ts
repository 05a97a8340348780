/**
 * Request checks for every RPC (docs/contract.md#rules, docs/contract.md#rpcs). Each function takes the wire request (snake_case,
 * as proto-loader decodes it) and returns the camelCase values the service passes on, or throws
 * AgentError INVALID_ARGUMENT whose message names the field, says what was wrong and what to
 * send instead. Values from the request are quoted with JSON escaping and shortened, so a
 * message never carries control characters or a whole oversized field.
 *
 * What is checked here is what the API layer can know: presence, sizes, characters, shape.
 * Whether an image reference parses, or a container exists, is for the runtime.
 */
import { AgentError } from '../errors.js';
import type { EnsureRequest } from '../runtime/runtime.js';
import type { DestroyContainerRequest__Output } from '../gen/agent/esb/agent/v1/DestroyContainerRequest.js';
import type { EnsureContainerRequest__Output } from '../gen/agent/esb/agent/v1/EnsureContainerRequest.js';
import type { InvokeWorkerRequest__Output } from '../gen/agent/esb/agent/v1/InvokeWorkerRequest.js';

const KIB = 1024;
const MIB = 1024 * KIB;

/**
 * Request limits. Lengths in characters (Unicode code points), sizes in bytes (UTF-8).
 * Clients must stay within them; the server's gRPC receive limit (server.ts) is derived from
 * `invokePayloadBytes`.
 */
export const LIMITS = Object.freeze({
  /** owner_id goes into the `com.esb.owner` label; the gateway sends its hostname. */
  ownerIdChars: 256,
  /** Ids the agent creates are at most 76 characters; longer ones cannot exist. */
  containerIdChars: 256,
  /** docs/contract.md#ensurecontainer. */
  functionNameChars: 128,
  /** docs/contract.md#ensurecontainer; the reference is parsed by the runtime. */
  imageChars: 512,
  /** Lambda allows 4 KB of function environment; the gateway adds its own variables on top. */
  envEntries: 512,
  envKeyChars: 256,
  /** Sum over entries of key + '=' + value + NUL, like the process's environment block. */
  envTotalBytes: 256 * KIB,
  invokePathChars: 2048,
  invokeHeaders: 128,
  /** Sum over headers of name + value. */
  invokeHeaderBytes: 64 * KIB,
  /** Lambda's synchronous payload limit is 6 MB; this leaves room while bounding memory. */
  invokePayloadBytes: 16 * MIB,
  /** Lambda's own maximum function timeout; longer requests are cut to it. */
  invokeTimeoutMaxMs: 15 * 60_000,
});

/** The Lambda Runtime Interface Emulator's invoke path: the default when `path` is blank. */
export const DEFAULT_INVOKE_PATH = '/2015-03-31/functions/function/invocations';

/** `{ containerId, ownerId }` of an RPC that names a container. */
export interface ContainerRef {
  readonly containerId: string;
  readonly ownerId: string;
}

/** A checked InvokeWorker request. */
export interface InvokeInput extends ContainerRef {
  /** Starts with '/'; no scheme, host or '..' segment. */
  readonly path: string;
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  /** Positive; the default when the request gave ≤ 0, at most LIMITS.invokeTimeoutMaxMs. */
  readonly timeoutMs: number;
}

function invalid(message: string): AgentError {
  return new AgentError('INVALID_ARGUMENT', message);
}

/** A request value for a message: JSON-quoted (escapes control characters), at most 64 chars. */
export function quote(s: string, max = 64): string {
  return JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s);
}

/** Number of code points, without building an array for the common short case. */
function charCount(s: string): number {
  // A string's code point count is at most its UTF-16 length, and equal when it has no pairs.
  if (!/[\uD800-\uDBFF]/.test(s)) return s.length;
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Index of the first C0 control, DEL or C1 control character, or -1. */
function controlCharIndex(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return i;
  }
  return -1;
}

function checkLength(field: string, value: string, max: number): void {
  const n = charCount(value);
  if (n > max) throw invalid(`${field} is ${n} characters long; the limit is ${max}`);
}

function checkNoControl(field: string, value: string): void {
  const i = controlCharIndex(value);
  if (i >= 0) {
    const hex = value.charCodeAt(i).toString(16).padStart(4, '0');
    throw invalid(`${field} contains a control character (U+${hex.toUpperCase()}) at position ${i}; send printable text only`);
  }
}

/** owner_id: trimmed, required, bounded, printable (docs/contract.md#ownership). */
export function validateOwner(raw: string): string {
  const owner = raw.trim();
  if (owner === '') throw invalid("owner_id is required: set it to the caller's identity (the gateway sends its hostname)");
  checkLength('owner_id', owner, LIMITS.ownerIdChars);
  checkNoControl('owner_id', owner);
  return owner;
}

/** container_id: trimmed, required, bounded, printable (docs/contract.md#rules). */
export function validateContainerId(raw: string): string {
  const id = raw.trim();
  if (id === '') throw invalid('container_id is required: pass the id EnsureContainer returned');
  checkLength('container_id', id, LIMITS.containerIdChars);
  checkNoControl('container_id', id);
  return id;
}

/** owner_id and container_id of Destroy/Pause/Resume/GetContainerMetrics/InvokeWorker; owner first. */
export function validateContainerRef(req: { readonly container_id: string; readonly owner_id: string }): ContainerRef {
  const ownerId = validateOwner(req.owner_id);
  const containerId = validateContainerId(req.container_id);
  return { containerId, ownerId };
}

/** DestroyContainer: `function_name` is accepted and ignored (docs/contract.md#destroycontainer). */
export function validateDestroy(req: DestroyContainerRequest__Output): ContainerRef {
  return validateContainerRef(req);
}

/**
 * function_name: required, ≤128 characters, printable. Kept exactly as sent (it goes raw into a
 * label and comes back in List, where the gateway matches it); only the blank check trims.
 */
export function validateFunctionName(raw: string): string {
  if (raw.trim() === '') throw invalid('function_name is required: name the function to start a worker for');
  checkLength('function_name', raw, LIMITS.functionNameChars);
  checkNoControl('function_name', raw);
  return raw;
}

/** image: optional (blank → the runtime resolves it), trimmed, ≤512 characters, no spaces. */
export function validateImage(raw: string): string {
  const image = raw.trim();
  if (image === '') return '';
  checkLength('image', image, LIMITS.imageChars);
  if (/\s/.test(image) || controlCharIndex(image) >= 0) {
    throw invalid(
      `image ${quote(image)} contains whitespace or control characters; expected a reference like registry:5010/name:tag, or blank for the default`,
    );
  }
  return image;
}

/**
 * env: at most LIMITS.envEntries entries and LIMITS.envTotalBytes in all; keys non-empty,
 * ≤256 characters, without '=' or control characters (a key with '=' would be split differently
 * by the process: docs/contract.md#rules); values may hold anything but NUL, which ends a C string.
 */
export function validateEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  const entries = Object.entries(env);
  if (entries.length > LIMITS.envEntries) throw invalid(`env has ${entries.length} entries; the limit is ${LIMITS.envEntries}`);
  let total = 0;
  for (const [key, value] of entries) {
    if (key === '') throw invalid('env has an entry with an empty key; every variable needs a name');
    checkLength(`env key ${quote(key)}`, key, LIMITS.envKeyChars);
    if (key.includes('=')) throw invalid(`env key ${quote(key)} contains '='; variable names cannot contain '=' (put it in the value)`);
    if (controlCharIndex(key) >= 0)
      throw invalid(`env key ${quote(key)} contains a control character or NUL; use printable names such as MY_VAR`);
    if (value.includes('\0')) throw invalid(`env value of ${quote(key)} contains a NUL character, which cannot be passed to a process`);
    total += Buffer.byteLength(key) + Buffer.byteLength(value) + 2;
  }
  if (total > LIMITS.envTotalBytes) throw invalid(`env is ${total} bytes in all; the limit is ${LIMITS.envTotalBytes} bytes`);
  return Object.fromEntries(entries);
}

/** EnsureContainer: owner, function_name, image, env (docs/contract.md#ensurecontainer). */
export function validateEnsure(req: EnsureContainerRequest__Output): EnsureRequest {
  const ownerId = validateOwner(req.owner_id);
  const functionName = validateFunctionName(req.function_name);
  const image = validateImage(req.image);
  const env = validateEnv(req.env);
  return { functionName, image, env, ownerId };
}

/** RFC 9110 token: the characters allowed in an HTTP header name. */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * path: blank → the RIE path; a missing leading '/' is added. The agent appends it to the
 * worker's own origin, so anything that could change the target is refused: a scheme or `//`
 * authority, `..` segments (also percent-encoded), backslashes, whitespace and control
 * characters, `#` (fragments are never sent), and non-ASCII characters (a request target is
 * ASCII: the proxy would refuse them later, after the ownership checks, and with another code
 * order than every other malformed field).
 */
export function validateInvokePath(raw: string): string {
  const p = raw.trim();
  if (p === '') return DEFAULT_INVOKE_PATH;
  checkLength('path', p, LIMITS.invokePathChars);
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(p) || p.startsWith('//')) {
    throw invalid(
      `path ${quote(p)} looks like a URL; send only the path (for example ${DEFAULT_INVOKE_PATH}): the agent always calls the worker's own address`,
    );
  }
  if (/[\s\\#]/.test(p) || controlCharIndex(p) >= 0) {
    throw invalid(`path ${quote(p)} contains whitespace, a backslash, '#' or a control character; percent-encode such characters`);
  }
  if (/[^\x20-\x7e]/.test(p)) {
    throw invalid(`path ${quote(p)} contains a non-ASCII character; percent-encode it (UTF-8)`);
  }
  const withSlash = p.startsWith('/') ? p : `/${p}`;
  const pathPart = withSlash.split('?', 1)[0] ?? '';
  for (const segment of pathPart.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw invalid(`path ${quote(p)} has malformed percent-encoding in segment ${quote(segment)}`);
    }
    if (decoded.split(/[/\\]/).includes('..')) {
      throw invalid(`path ${quote(p)} contains a '..' segment; send a path without '..'`);
    }
  }
  return withSlash;
}

/**
 * headers: at most LIMITS.invokeHeaders, LIMITS.invokeHeaderBytes in all; names are HTTP tokens,
 * values have no CR, LF or NUL (they would split or end the header line: request smuggling),
 * and only the characters an HTTP/1.1 field value can carry: tab, printable ASCII and
 * U+0080–U+00FF (undici's rule; anything else would fail later in the proxy).
 */
export function validateInvokeHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const entries = Object.entries(headers);
  if (entries.length > LIMITS.invokeHeaders) throw invalid(`headers has ${entries.length} entries; the limit is ${LIMITS.invokeHeaders}`);
  let total = 0;
  for (const [name, value] of entries) {
    if (!HTTP_TOKEN.test(name))
      throw invalid(`header name ${quote(name)} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_\`|~ only)`);
    if (/[\r\n\0]/.test(value)) throw invalid(`header ${quote(name)} has a value with CR, LF or NUL; header values must be a single line`);
    if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) {
      throw invalid(
        `header ${quote(name)} has a value with a control character or a character above U+00FF; send printable text (percent- or base64-encode the rest)`,
      );
    }
    total += Buffer.byteLength(name) + Buffer.byteLength(value);
  }
  if (total > LIMITS.invokeHeaderBytes) throw invalid(`headers are ${total} bytes in all; the limit is ${LIMITS.invokeHeaderBytes} bytes`);
  return Object.fromEntries(entries);
}

/** timeout_ms: ≤ 0 → `defaultMs` (docs/contract.md#invokeworker); above LIMITS.invokeTimeoutMaxMs → that maximum. */
export function invokeTimeoutMs(raw: number, defaultMs: number): number {
  if (!Number.isFinite(raw) || raw <= 0) return Math.min(defaultMs, LIMITS.invokeTimeoutMaxMs);
  return Math.min(Math.trunc(raw), LIMITS.invokeTimeoutMaxMs);
}

/** InvokeWorker: owner, container_id, path, payload size, headers, timeout (docs/contract.md#invokeworker). */
export function validateInvoke(req: InvokeWorkerRequest__Output, { defaultTimeoutMs }: { readonly defaultTimeoutMs: number }): InvokeInput {
  const { containerId, ownerId } = validateContainerRef(req);
  const path = validateInvokePath(req.path);
  if (req.payload.length > LIMITS.invokePayloadBytes) {
    throw invalid(`payload is ${req.payload.length} bytes; the limit is ${LIMITS.invokePayloadBytes} bytes`);
  }
  const headers = validateInvokeHeaders(req.headers);
  return { containerId, ownerId, path, payload: req.payload, headers, timeoutMs: invokeTimeoutMs(req.timeout_ms, defaultTimeoutMs) };
}

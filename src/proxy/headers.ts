/**
 * What InvokeWorker may pass between the gateway and a worker: request path and header checks,
 * and the hop-by-hop filter applied in both directions (docs/contract.md#invokeworker, §7: the gateway
 * forwards our response headers to its own HTTP clients). Pure functions, no I/O.
 */
import { AgentError } from '../errors.js';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `proxy-connection` and `keep-alive`
 * from RFC 2068): they describe one connection, so a proxy must not forward them.
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Request headers undici computes itself for the worker connection: `host` comes from the
 * worker's origin (never from the request: no SSRF via Host, docs/contract.md#invokeworker) and `content-length` from
 * the payload. `expect` is dropped because the agent sends the whole payload at once (undici
 * refuses `expect` outright with NotSupportedError).
 */
const SET_BY_AGENT: ReadonlySet<string> = new Set(['host', 'content-length', 'expect']);

/** RFC 9110 §5.6.2 token: what a header name may contain. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Bytes undici accepts in a header value (its `isValidHeaderValue`): no CR, LF or NUL. */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
/** A request-target in origin form: printable ASCII, no fragment. */
const BAD_PATH_CHAR = /[^\x21-\x7e]|#/;

/** Lower-cased names listed in a Connection header value (each is hop-by-hop for that message). */
function connectionTokens(value: string | readonly string[] | undefined): Set<string> {
  const out = new Set<string>();
  if (value === undefined) return out;
  for (const v of typeof value === 'string' ? [value] : value) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') out.add(t);
    }
  }
  return out;
}

/**
 * Checks the request path. The caller has already defaulted and normalised it (docs/contract.md#invokeworker); this is
 * the last line before the socket: it must be an origin-form path (starts with one `/`), so that
 * no scheme or authority can ever reach the request line.
 *
 * @throws AgentError INVALID_ARGUMENT naming the problem.
 */
export function checkPath(path: string): void {
  if (!path.startsWith('/') || path.startsWith('//')) {
    throw new AgentError(
      'INVALID_ARGUMENT',
      `invoke path must start with a single '/' (an origin-form path, no scheme or host): ${JSON.stringify(path)}`,
    );
  }
  if (BAD_PATH_CHAR.test(path)) {
    throw new AgentError(
      'INVALID_ARGUMENT',
      `invoke path has a character not allowed in a request target (space, control, non-ASCII or '#'): ${JSON.stringify(path)}`,
    );
  }
}

/**
 * The headers to send to the worker: the request's own, minus hop-by-hop ones (including any
 * named in its Connection header) and the ones undici sets (`host`, `content-length`, `expect`).
 * Names keep their case; HTTP/1.1 names are case-insensitive anyway.
 *
 * @throws AgentError INVALID_ARGUMENT for a name that is not an HTTP token or a value with CR,
 *   LF, NUL or a character above U+00FF (undici would refuse them after we had queued).
 */
export function requestHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  let connection: string | undefined;
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() === 'connection') connection = connection === undefined ? value : `${connection},${value}`;
  }
  const listed = connectionTokens(connection);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name))
      throw new AgentError('INVALID_ARGUMENT', `invoke header name is not a valid HTTP token: ${JSON.stringify(name)}`);
    if (BAD_VALUE_CHAR.test(value)) {
      throw new AgentError(
        'INVALID_ARGUMENT',
        `invoke header ${name} has a character not allowed in an HTTP header value (CR, LF, NUL or above U+00FF)`,
      );
    }
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || SET_BY_AGENT.has(lower) || listed.has(lower)) continue;
    // `__proto__` is a valid token: a plain assignment would set the prototype, not a key.
    Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * The worker's response headers as the contract returns them: names lower-case (undici's
 * parse), hop-by-hop ones (and those listed in its Connection header) dropped, and repeated
 * headers joined with `, ` — `set-cookie` too, as docs/contract.md#invokeworker says (the proto map holds one string
 * per name).
 */
export function responseHeaders(headers: Readonly<Record<string, string | readonly string[] | undefined>>): Record<string, string> {
  const listed = connectionTokens(headers['connection']);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || listed.has(lower)) continue;
    const joined = typeof value === 'string' ? value : value.join(', ');
    Object.defineProperty(out, lower, { value: joined, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * Registry authentication as containerd's `remotes/docker/authorizer.go` does it
 * (docs/containerd.md#registry-auth): parse the `WWW-Authenticate` challenge of a 401, then either send
 * HTTP Basic credentials, or exchange them (or nothing, anonymously) for a Bearer token at the
 * challenge's realm. Tokens are cached per registry + scope (a bounded LRU: the scope comes from
 * the caller's image reference); a second 401 after fresh credentials is PERMISSION_DENIED,
 * never a loop. The realm is a URL the registry chose, so the registry client checks it before
 * anything, credentials above all, is sent there.
 *
 * Messages never carry the username or the config file's path (they reach the gRPC caller);
 * those go to the debug log.
 */
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DockerCredentials, RegistryCredentials } from './docker-config.js';
import { LruMap } from './lru-map.js';

/** One challenge of a `WWW-Authenticate` header. `scheme` is lower-case, as are param names. */
export interface AuthChallenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parses `WWW-Authenticate` values (RFC 7235): several challenges may share one header,
 * params are `name=token` or `name="quoted \"string\""`, separated by commas.
 */
export function parseWwwAuthenticate(header: string | readonly string[] | undefined): AuthChallenge[] {
  if (header === undefined) return [];
  const values = typeof header === 'string' ? [header] : header;
  const out: AuthChallenge[] = [];
  for (const value of values) {
    let i = 0;
    const skip = (chars: string): void => {
      while (i < value.length && chars.includes(value.charAt(i))) i++;
    };
    const token = (): string => {
      const start = i;
      while (i < value.length && !' \t,='.includes(value.charAt(i))) i++;
      return value.slice(start, i);
    };
    for (;;) {
      skip(' \t,');
      const scheme = token();
      if (scheme === '') break;
      const params: Record<string, string> = {};
      for (;;) {
        skip(' \t');
        const save = i;
        const name = token();
        skip(' \t');
        if (name === '' || value.charAt(i) !== '=') {
          i = save; // not a param: the next challenge's scheme (or the end)
          break;
        }
        i++;
        skip(' \t');
        let v = '';
        if (value.charAt(i) === '"') {
          i++;
          while (i < value.length && value.charAt(i) !== '"') {
            if (value.charAt(i) === '\\' && i + 1 < value.length) i++;
            v += value.charAt(i);
            i++;
          }
          i++; // closing quote
        } else {
          const start = i;
          while (i < value.length && !' \t,'.includes(value.charAt(i))) i++;
          v = value.slice(start, i);
        }
        params[name.toLowerCase()] = v;
        skip(' \t');
        if (value.charAt(i) === ',') i++;
      }
      out.push({ scheme: scheme.toLowerCase(), params });
    }
  }
  return out;
}

/** The scope a pull needs; the Go client adds it even when the challenge names none. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** A minimal HTTP exchange for the token endpoint (provided by the registry client). */
export type TokenHttp = (
  url: string,
  init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; signal: AbortSignal },
) => Promise<{ status: number; body: Buffer }>;

/** Dependencies of an Authorizer. */
export interface AuthorizerOptions {
  /** Loads the credentials (read when a challenge arrives, so edits need no restart). */
  readonly credentials: () => Promise<DockerCredentials>;
  /** HTTP for the token realm. */
  readonly http: TokenHttp;
  /**
   * Vets a token realm before a request goes there; `withCredentials` when the request would
   * carry the docker config's credentials. Throws an AgentError to refuse.
   */
  readonly checkRealm?: ((registry: string, realm: URL, withCredentials: boolean) => Promise<void>) | undefined;
  readonly log?: Logger | undefined;
  /** Clock seam for token expiry. */
  readonly now?: () => number;
}

/** Bearer tokens kept (registry + repository scope); the least recently used go first. */
export const MAX_CACHED_TOKENS = 1024;
/** Basic credentials kept per registry. */
const MAX_CACHED_BASIC = 256;
/** Error codes of RFC 6750 a Bearer challenge may carry; anything else is not repeated. */
const BEARER_ERRORS = new Set(['invalid_request', 'invalid_token', 'insufficient_scope']);

/** The challenge's `error` when it is a standard code (never free text from the registry). */
export function bearerError(challenges: readonly AuthChallenge[]): string | undefined {
  const why = challenges.find((c) => c.params['error'] !== undefined)?.params['error'];
  return why !== undefined && BEARER_ERRORS.has(why) ? why : undefined;
}

/** Bearer tokens live this long when the server gives no `expires_in` (docker's default). */
const DEFAULT_TOKEN_TTL_S = 60;
/** Refresh tokens a little early so one does not expire between check and use. */
const TOKEN_EXPIRY_MARGIN_MS = 5_000;
/** The Go client's OAuth client id. */
const CLIENT_ID = 'containerd-client';

interface CachedToken {
  readonly header: string;
  readonly expiresAt: number;
}

function basic(c: RegistryCredentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}

function denied(registry: string, why: string): AgentError {
  return new AgentError('PERMISSION_DENIED', `registry ${registry} denied access: ${why}`);
}

/**
 * Holds what each registry asked for and the credentials or tokens that answered it. One per
 * registry client; safe for concurrent pulls (token fetches for the same key are shared).
 */
export class Authorizer {
  readonly #opts: AuthorizerOptions;
  readonly #now: () => number;
  readonly #basic = new LruMap<string, string>(MAX_CACHED_BASIC);
  readonly #tokens = new LruMap<string, CachedToken>(MAX_CACHED_TOKENS);
  readonly #inflight = new Map<string, Promise<void>>();

  constructor(opts: AuthorizerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** The `Authorization` value to send to `registry` for `scope`, when one is known. */
  authorization(registry: string, scope: string): string | undefined {
    const t = this.#tokens.get(`${registry} ${scope}`);
    if (t && t.expiresAt > this.#now()) return t.header;
    return this.#basic.get(registry);
  }

  /**
   * Answers a 401: works out fresh credentials for `registry` + `scope` from its challenges.
   *
   * @throws AgentError PERMISSION_DENIED when there are no usable credentials or the token
   *   server refuses them; UNAVAILABLE when the token server is unreachable or failing.
   */
  async handleChallenge(registry: string, scope: string, challenges: readonly AuthChallenge[], signal: AbortSignal): Promise<void> {
    const key = `${registry} ${scope}`;
    this.#tokens.delete(key);
    const running = this.#inflight.get(key);
    if (running) return running;
    const p = this.#answer(registry, scope, challenges, signal).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  async #answer(registry: string, scope: string, challenges: readonly AuthChallenge[], signal: AbortSignal): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basicChallenge = challenges.find((c) => c.scheme === 'basic');
    const store = await this.#opts.credentials();
    const creds = store.lookup(registry);
    this.#opts.log?.debug(
      { registry, configFile: store.file === '' ? undefined : store.file, hasCredentials: creds !== undefined },
      'registry asks for authentication',
    );
    if (bearer) {
      const header = await this.#fetchToken(registry, scope, bearer, creds, signal);
      const now = this.#now();
      this.#tokens.prune((t) => t.expiresAt <= now);
      this.#tokens.set(`${registry} ${scope}`, header);
      return;
    }
    if (basicChallenge) {
      if (!creds) throw denied(registry, `authentication required and no credentials for ${registry} in DOCKER_CONFIG`);
      this.#basic.set(registry, basic(creds));
      return;
    }
    const schemes = challenges.map((c) => c.scheme).join(', ');
    throw denied(
      registry,
      schemes === '' ? 'answered 401 without a WWW-Authenticate challenge' : `unsupported authentication scheme(s): ${schemes}`,
    );
  }

  async #fetchToken(
    registry: string,
    scope: string,
    challenge: AuthChallenge,
    creds: RegistryCredentials | undefined,
    signal: AbortSignal,
  ): Promise<CachedToken> {
    const realm = challenge.params['realm'];
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm ?? '');
      if (realmUrl.protocol !== 'https:' && realmUrl.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      throw denied(registry, 'Bearer challenge without a usable http(s) realm');
    }
    await this.#opts.checkRealm?.(registry, realmUrl, creds !== undefined);
    const service = challenge.params['service'];
    const scopes = [...new Set([scope, ...(challenge.params['scope'] ?? '').split(' ').filter((s) => s !== '')])];

    if (creds) {
      // POST form first (OAuth2), as the Go client does; fall back to GET + Basic when the
      // server does not implement it (docs/containerd.md#registry-auth step 3).
      const form = new URLSearchParams({ client_id: CLIENT_ID, scope: scopes.join(' ') });
      if (service !== undefined) form.set('service', service);
      if (creds.identityToken !== undefined) {
        form.set('grant_type', 'refresh_token');
        form.set('refresh_token', creds.identityToken);
      } else {
        form.set('grant_type', 'password');
        form.set('username', creds.username);
        form.set('password', creds.password);
      }
      const res = await this.#opts.http(realmUrl.toString(), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
        body: form.toString(),
        signal,
      });
      const fallback = [400, 401, 404].includes(res.status) || (res.status === 405 && creds.username !== '');
      if (res.status === 200) return this.#token(res.body, registry, ['access_token', 'token']);
      if (!fallback) throw this.#tokenError(registry, res.status, creds);
    }
    const url = new URL(realmUrl);
    if (service !== undefined) url.searchParams.set('service', service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (creds && creds.password !== '') headers['authorization'] = basic(creds);
    const res = await this.#opts.http(url.toString(), { method: 'GET', headers, signal });
    if (res.status !== 200) throw this.#tokenError(registry, res.status, creds);
    return this.#token(res.body, registry, ['token', 'access_token']);
  }

  #token(body: Buffer, registry: string, fields: readonly string[]): CachedToken {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new AgentError('UNAVAILABLE', `token server of ${registry} answered with invalid JSON`, { cause: err });
    }
    const token = fields.map((f) => j[f]).find((v) => typeof v === 'string' && v !== '') as string | undefined;
    if (token === undefined) throw new AgentError('UNAVAILABLE', `token server of ${registry} answered without a token`);
    const ttlS = typeof j['expires_in'] === 'number' && j['expires_in'] > 0 ? j['expires_in'] : DEFAULT_TOKEN_TTL_S;
    return { header: `Bearer ${token}`, expiresAt: this.#now() + Math.max(ttlS * 1000 - TOKEN_EXPIRY_MARGIN_MS, 1000) };
  }

  #tokenError(registry: string, status: number, creds: RegistryCredentials | undefined): AgentError {
    if (status === 401 || status === 403) {
      this.#opts.log?.debug({ registry, status, username: creds === undefined ? undefined : '[redacted]' }, 'token server refused');
      return creds
        ? denied(registry, `token server refused the credentials configured for ${registry} in DOCKER_CONFIG (HTTP ${status})`)
        : denied(
            registry,
            `authentication required and no credentials for ${registry} in DOCKER_CONFIG (token server answered HTTP ${status})`,
          );
    }
    if (status >= 500 || status === 429) return new AgentError('UNAVAILABLE', `token server of ${registry} failed with HTTP ${status}`);
    return new AgentError('PERMISSION_DENIED', `token server of ${registry} answered HTTP ${status}`);
  }
}

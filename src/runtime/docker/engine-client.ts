/**
 * A small Docker Engine API client over undici (no docker CLI, no dockerode): `DOCKER_HOST`
 * `unix:///path` or `tcp://host:port`, versioned paths (`/v1.41/...`), JSON in and out, and
 * every failure as an AgentError (errors.ts): dockerd unreachable → UNAVAILABLE, 404 → NOT_FOUND,
 * 409 → ALREADY_EXISTS / FAILED_PRECONDITION, the caller's cancel → CANCELLED/DEADLINE_EXCEEDED.
 * One connection pool per client; `close()` releases it.
 */
import { Pool, type Dispatcher } from 'undici';
import { AgentError, abortError, errorText } from '../../errors.js';
import { engineError, isUnreachable } from './errors.js';

/** Engine API version of every versioned path: Docker 20.10 (Debian 12's docker.io) speaks it, newer daemons still accept it. */
export const ENGINE_API_VERSION = '1.41';
/** Bound on one ordinary call when the caller gives none: the gateway sets no deadlines (docs/contract.md#gateway). */
const DEFAULT_CALL_TIMEOUT_MS = 60_000;

export interface EngineClientOptions {
  /** `unix:///path` or `tcp://host:port` (DOCKER_HOST). */
  readonly host: string;
  readonly apiVersion?: string;
}

export interface EngineRequest {
  readonly method: 'GET' | 'POST' | 'DELETE' | 'HEAD';
  /** Path after the version, e.g. `/containers/json`. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  /** JSON request body. */
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  /** The caller's cancel. */
  readonly signal?: AbortSignal | undefined;
  /** What the call does, for messages: `create container esb-…`. */
  readonly what: string;
  /** Own bound on the call (default 60 s); 0 = none (streams). */
  readonly timeoutMs?: number;
}

/** A streaming answer, or a failed one already read. */
export type EngineStream =
  | { readonly ok: true; readonly body: Dispatcher.ResponseData['body'] }
  | { readonly ok: false; readonly status: number; readonly body: string };

export interface EngineResponse {
  readonly status: number;
  readonly body: string;
}

/** The endpoint of a DOCKER_HOST value. */
export function parseDockerHost(host: string): { origin: string; socketPath?: string } {
  if (host.startsWith('unix://')) {
    const socketPath = host.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw new AgentError('INVALID_ARGUMENT', `DOCKER_HOST ${host}: expected unix:///absolute/path`);
    return { origin: 'http://docker', socketPath };
  }
  const m = /^tcp:\/\/([^/]+:\d+)\/?$/.exec(host);
  if (m) return { origin: `http://${m[1]}` };
  throw new AgentError('INVALID_ARGUMENT', `DOCKER_HOST ${host}: expected unix:///path or tcp://host:port`);
}

export class DockerEngineClient {
  readonly host: string;
  readonly apiVersion: string;
  readonly #pool: Pool;

  constructor(opts: EngineClientOptions) {
    this.host = opts.host;
    this.apiVersion = opts.apiVersion ?? ENGINE_API_VERSION;
    const { origin, socketPath } = parseDockerHost(opts.host);
    this.#pool = new Pool(origin, {
      ...(socketPath !== undefined ? { socketPath } : {}),
      connections: 32,
      connectTimeout: 5_000,
      keepAliveTimeout: 10_000,
      // Long calls (pull, events) are bounded by their own signals instead.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  /** Sends one call and reads the whole answer, whatever its status. */
  async request(req: EngineRequest): Promise<EngineResponse> {
    return this.#withSignal(req, async (signal) => {
      const res = await this.#send(req, signal);
      const body = await res.body.text();
      return { status: res.statusCode, body };
    });
  }

  /** Sends one call; a 2xx answer's JSON (undefined for an empty body), else an AgentError. */
  async json<T>(req: EngineRequest): Promise<T> {
    const res = await this.request(req);
    if (res.status < 200 || res.status > 299) throw engineError(req.what, res.status, res.body);
    return (res.body === '' ? undefined : JSON.parse(res.body)) as T;
  }

  /**
   * Sends one call and hands back its streaming body once a 2xx status arrived (pull progress,
   * events); a non-2xx answer comes back read, for the caller to map. The caller must consume
   * or destroy a streaming body; `req.signal` aborts it.
   */
  async stream(req: EngineRequest): Promise<EngineStream> {
    const signal = req.signal ?? new AbortController().signal;
    try {
      const res = await this.#send(req, signal);
      if (res.statusCode >= 200 && res.statusCode <= 299) return { ok: true, body: res.body };
      return { ok: false, status: res.statusCode, body: await res.body.text() };
    } catch (err) {
      throw this.#failure(req.what, err, signal);
    }
  }

  /** `GET /_ping` (unversioned): resolves when dockerd answers OK. */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.#withSignal({ method: 'GET', path: '/_ping', what: 'ping dockerd', signal, timeoutMs: 5_000 }, async (s) => {
      const res = await this.#pool.request({ method: 'GET', path: '/_ping', signal: s });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw engineError('ping dockerd', res.statusCode, text);
    });
  }

  /** Closes the pool (open streams are destroyed). */
  async close(): Promise<void> {
    await this.#pool.destroy();
  }

  #path(req: EngineRequest): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) q.set(k, String(v));
    const qs = q.toString();
    return `/v${this.apiVersion}${req.path}${qs ? `?${qs}` : ''}`;
  }

  #send(req: EngineRequest, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { ...req.headers };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['content-type'] = 'application/json';
    }
    return this.#pool.request({ method: req.method, path: this.#path(req), headers, ...(body !== undefined ? { body } : {}), signal });
  }

  /** Runs `fn` under the caller's signal plus the call's own bound; maps every failure. */
  async #withSignal<T>(req: EngineRequest, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const timeoutMs = req.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const bound = new AbortController();
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            bound.abort(new AgentError('UNAVAILABLE', `${req.what}: dockerd at ${this.host} did not answer within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
    const signal = req.signal ? AbortSignal.any([req.signal, bound.signal]) : bound.signal;
    try {
      return await fn(signal);
    } catch (err) {
      throw this.#failure(req.what, err, signal);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  #failure(what: string, err: unknown, signal: AbortSignal): AgentError {
    if (err instanceof AgentError) return err;
    if (signal.aborted) return abortError(signal, what);
    if (isUnreachable(err))
      return new AgentError('UNAVAILABLE', `${what}: dockerd unreachable at ${this.host}: ${errorText(err)}`, { cause: err });
    return new AgentError('INTERNAL', `${what}: ${errorText(err)}`, { cause: err });
  }
}

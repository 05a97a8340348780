/**
 * InvokeWorker's HTTP leg: POSTs one payload to a worker's Lambda RIE and returns its status,
 * headers and body (docs/contract.md#invokeworker). Fixes the reference agent's docs/go-agent.md#w9 (a new transport per
 * call, never closed) and docs/go-agent.md#w10 (every error retried, even after the request was sent; cancel
 * reported as a deadline).
 *
 * The rules that shape this file:
 * - One single-connection undici `Client` per worker, kept until `closeWorker` (docs/go-agent.md#w9); one
 *   request at a time per worker, the rest wait in a FIFO (RIE serves one invocation at a time,
 *   docs/contract.md#worker-contract).
 * - A request counts as sent from undici's `onRequestStart`, which runs on a connected socket
 *   right before the first byte is written. Before it, a failure cannot have reached the
 *   worker and a network error is retried as "not ready yet"; after it, nothing is retried,
 *   because a function must never run twice because of the agent (docs/go-agent.md#w10, docs/contract.md#invokeworker).
 * - Every time limit is our own timer feeding an AbortController: undici's headers/body
 *   timeouts run on ~1 s "fast timers" (docs/design.md#undici), so they are disabled.
 * - Error codes follow what the gateway does with them (docs/contract.md#gateway): it re-runs the payload on a
 *   new worker after UNAVAILABLE, DEADLINE_EXCEEDED or NOT_FOUND, so a connection lost after
 *   sending is INTERNAL, never UNAVAILABLE.
 */
import type { InvokeRequest, InvokeResponse, InvokeTarget } from './types.js';
import net from 'node:net';
import { Client, type Dispatcher } from 'undici';
import { AgentError, abortError, errorText, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { checkPath, requestHeaders, responseHeaders } from './headers.js';
import { SerialQueue } from '../concurrency/serial-queue.js';

/** First pause between readiness attempts (connection refused: RIE not listening yet). */
export const READY_BACKOFF_INITIAL_MS = 10;
/** Longest pause between readiness attempts; short, because cold starts wait on it. */
export const READY_BACKOFF_MAX_MS = 200;
/**
 * Bound on one TCP connect attempt. A worker on the local bridge answers a SYN in well under a
 * millisecond; 2 s (the reference agent's value) leaves room for one SYN retransmission (Linux
 * initial RTO 1 s) before the attempt is retried. The call's deadline cuts it shorter anyway.
 */
export const CONNECT_TIMEOUT_MS = 2_000;
/**
 * How long an idle keep-alive connection to a worker stays open. RIE's Go server sets no idle
 * timeout, so the agent decides; 30 s keeps a busy worker on one connection and frees the
 * sockets of idle (often paused) ones.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 30_000;
/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Network errors that, before the request was sent, mean "the worker is not reachable yet". */
const NOT_READY_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', // nothing listens yet: the normal cold-start case
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH', // ARP got no answer: the veth may not be up yet, or the worker is gone
  'ENETUNREACH',
  'EHOSTDOWN',
  'EADDRNOTAVAIL',
  'EAGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
]);

/** undici errors that mean the dispatcher was closed under us (closeWorker/close raced). */
const CLOSED_CODES: ReadonlySet<string> = new Set(['UND_ERR_DESTROYED', 'UND_ERR_CLOSED']);

export type { InvokeRequest, InvokeResponse, InvokeTarget } from './types.js';

/** Time source for deadlines and backoff; tests may inject one. */
export interface InvokerClock {
  /** Milliseconds from an arbitrary origin; only differences are used. */
  now(): number;
  /** Runs `fn` after `ms`; returns a function that cancels it. */
  setTimer(fn: () => void, ms: number): () => void;
}

/** Real time: `performance.now()` and `setTimeout`. */
export const systemClock: InvokerClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => {
      clearTimeout(t);
    };
  },
};

export interface InvokerOptions {
  /** Largest response body accepted, bytes; a body of exactly this size passes. */
  readonly maxResponseBytes: number;
  /** Used when a request's `timeoutMs` ≤ 0 (AGENT_INVOKE_DEFAULT_TIMEOUT_MS). */
  readonly defaultTimeoutMs: number;
  readonly log: Logger;
  /**
   * Calls that may wait behind the running one on a worker (AGENT_INVOKE_MAX_QUEUE); one more
   * is refused RESOURCE_EXHAUSTED at once, unsent. Default: unbounded.
   */
  readonly maxQueue?: number | undefined;
  readonly metrics?: Pick<AgentMetrics, 'invokeDuration' | 'invokeRequestBytes' | 'invokeResponseBytes' | 'invokeQueued' | 'invokeQueueFull'> | undefined;
  /** Builds the dispatcher for one worker origin; default a single-connection keep-alive Client. */
  readonly dispatcherFactory?: ((origin: string) => Dispatcher) | undefined;
  readonly clock?: InvokerClock | undefined;
}

/** The dispatcher `Invoker` uses unless told otherwise: one keep-alive connection, no undici timers. */
export function createWorkerDispatcher(origin: string): Dispatcher {
  return new Client(origin, {
    pipelining: 1,
    connectTimeout: CONNECT_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    keepAliveMaxTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // 0 disables them: the call's own AbortSignal-based deadline is the only time limit
    // (undici's fast timers have ~1 s resolution, docs/design.md#undici).
    headersTimeout: 0,
    bodyTimeout: 0,
  });
}

/** One worker's connection and queue. */
interface Lane {
  readonly id: string;
  readonly origin: string;
  readonly dispatcher: Dispatcher;
  readonly queue: SerialQueue;
  /** Controllers of the calls queued or running on this lane, for closeWorker. */
  readonly calls: Set<AbortController>;
}

/** Where a call is, for error messages and the log line. */
interface CallState {
  phase: 'queued' | 'connecting' | 'sent';
  attempts: number;
  lastConnectError: unknown;
  requestSent: boolean;
}

type AttemptResult = { readonly kind: 'response'; readonly response: InvokeResponse } | { readonly kind: 'not-ready'; readonly cause: unknown };

function codeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

function describe(err: unknown): string {
  const code = codeOf(err);
  const text = errorText(err);
  return code !== undefined && !text.includes(code) ? `${code}: ${text}` : text;
}

/**
 * Proxies invocations to workers. One instance per agent; `closeWorker` when a worker is
 * destroyed, `close` at shutdown. Every failure is an AgentError:
 * - INVALID_ARGUMENT: bad path or header;
 * - FAILED_PRECONDITION: the target has no usable address, or the worker was destroyed
 *   (closeWorker) while the call was queued or running;
 * - DEADLINE_EXCEEDED: the call's timeout passed (while queued, while the worker did not accept
 *   connections, or while waiting for the response), or the caller's signal timed out;
 * - CANCELLED: the caller's signal aborted, or the invoker was closed;
 * - RESOURCE_EXHAUSTED: response body over `maxResponseBytes`, or `maxQueue` calls already
 *   waiting for the worker (refused at once, never sent);
 * - INTERNAL: the worker closed or reset the connection after the request was sent (not
 *   retried: the function may have run), or any other failure.
 */
export class Invoker {
  readonly #maxResponseBytes: number;
  readonly #defaultTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #log: Logger;
  readonly #metrics: InvokerOptions['metrics'];
  readonly #factory: (origin: string) => Dispatcher;
  readonly #clock: InvokerClock;
  readonly #lanes = new Map<string, Lane>();
  #closed = false;

  /** Workers with a lane (connection entry) right now. */
  get connections(): number {
    return this.#lanes.size;
  }

  constructor({ maxResponseBytes, defaultTimeoutMs, maxQueue, log, metrics, dispatcherFactory, clock }: InvokerOptions) {
    if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes < 0) throw new RangeError(`invalid maxResponseBytes: ${maxResponseBytes}`);
    if (!Number.isFinite(defaultTimeoutMs) || defaultTimeoutMs <= 0) throw new RangeError(`invalid defaultTimeoutMs: ${defaultTimeoutMs}`);
    this.#maxResponseBytes = maxResponseBytes;
    this.#defaultTimeoutMs = defaultTimeoutMs;
    if (maxQueue !== undefined && (!Number.isSafeInteger(maxQueue) || maxQueue < 0)) throw new RangeError(`invalid maxQueue: ${maxQueue}`);
    this.#maxQueue = maxQueue ?? Number.POSITIVE_INFINITY;
    this.#log = log.child({ module: 'invoke' });
    this.#metrics = metrics;
    this.#factory = dispatcherFactory ?? createWorkerDispatcher;
    this.#clock = clock ?? systemClock;
  }

  /**
   * POSTs `req.payload` to `http://{ip}:{port}{path}` of `target` and returns the worker's
   * answer; 4xx/5xx and function errors are normal results. Waits behind earlier calls to the
   * same worker, retries connection failures until the worker listens, and ends within
   * `req.timeoutMs` (or the default). Leaves no request running on failure: a cancelled or
   * timed-out request is aborted (the worker sees its connection close), a queued one is never
   * sent.
   */
  async invoke(target: InvokeTarget, req: InvokeRequest, opts: { readonly signal: AbortSignal }): Promise<InvokeResponse> {
    const started = this.#clock.now();
    const what = `invoke worker ${target.id}`;
    const call: CallState = { phase: 'queued', attempts: 0, lastConnectError: undefined, requestSent: false };
    let code: 'OK' | ErrorCode = 'OK';
    let response: InvokeResponse | undefined;
    const ac = new AbortController();
    let cancelTimer: (() => void) | undefined;
    let lane: Lane | undefined;
    const onClientAbort = (): void => {
      ac.abort(abortError(opts.signal, what));
    };
    try {
      if (this.#closed) throw new AgentError('CANCELLED', `${what}: the invoker is closed (agent shutting down)`);
      if (opts.signal.aborted) throw abortError(opts.signal, what);
      const origin = workerOrigin(target);
      checkPath(req.path);
      const headers = requestHeaders(req.headers);
      const timeoutMs = Math.min(req.timeoutMs > 0 ? req.timeoutMs : this.#defaultTimeoutMs, MAX_TIMER_MS);

      cancelTimer = this.#clock.setTimer(() => {
        ac.abort(deadlineError(what, origin, timeoutMs, call));
      }, timeoutMs);
      opts.signal.addEventListener('abort', onClientAbort, { once: true });
      lane = this.#lane(target.id, origin);
      // Checked and joined without an await in between, so the bound holds exactly.
      const queued = lane.queue.busy;
      if (queued && lane.queue.waiting >= this.#maxQueue) {
        this.#metrics?.invokeQueueFull.inc();
        throw new AgentError(
          'RESOURCE_EXHAUSTED',
          `${what}: ${lane.queue.waiting} invocations are already waiting for this worker (AGENT_INVOKE_MAX_QUEUE=${this.#maxQueue}); request not sent, retry later or ensure another worker`,
        );
      }
      lane.calls.add(ac);

      if (queued) this.#metrics?.invokeQueued.inc();
      try {
        await lane.queue.acquire(ac.signal);
      } finally {
        if (queued) this.#metrics?.invokeQueued.dec();
      }
      try {
        call.phase = 'connecting';
        let backoffMs = READY_BACKOFF_INITIAL_MS;
        for (;;) {
          call.attempts++;
          const result = await this.#attempt(lane, req, headers, ac.signal, call);
          if (result.kind === 'response') {
            response = result.response;
            return response;
          }
          call.lastConnectError = result.cause;
          const stopped = target.stoppedReason?.();
          if (stopped !== undefined) throw new AgentError('FAILED_PRECONDITION', `${what}: ${stopped} before accepting the request (request not sent)`);
          await this.#sleep(backoffMs, ac.signal);
          backoffMs = Math.min(backoffMs * 2, READY_BACKOFF_MAX_MS);
        }
      } finally {
        lane.queue.release();
      }
    } catch (err) {
      const e = err instanceof AgentError ? err : new AgentError('INTERNAL', `${what}: ${describe(err)}`, { cause: err });
      code = e.code;
      throw e;
    } finally {
      cancelTimer?.();
      opts.signal.removeEventListener('abort', onClientAbort);
      lane?.calls.delete(ac);
      const ms = this.#clock.now() - started;
      this.#metrics?.invokeDuration.observe({ code }, ms / 1000);
      if (call.requestSent) this.#metrics?.invokeRequestBytes.observe(req.payload.length);
      if (response) this.#metrics?.invokeResponseBytes.observe(response.body.length);
      this.#log.debug(
        {
          worker: target.id,
          path: req.path,
          code,
          ms: Math.round(ms),
          attempts: call.attempts,
          sent: call.requestSent,
          status: response?.statusCode,
          requestBytes: req.payload.length,
          responseBytes: response?.body.length,
        },
        'invoke',
      );
    }
  }

  /**
   * Closes the worker's connection and forgets it. Calls queued for the worker fail
   * FAILED_PRECONDITION without being sent; a running one is aborted (the worker sees the
   * connection close) and fails FAILED_PRECONDITION. A later invoke opens a new connection.
   * Unknown ids are a no-op.
   */
  async closeWorker(id: string): Promise<void> {
    await this.#closeLane(id, new AgentError('FAILED_PRECONDITION', `invoke worker ${id}: worker destroyed`));
  }

  /** Closes every worker connection; calls in progress fail CANCELLED, later ones too. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(
      [...this.#lanes.keys()].map((id) => this.#closeLane(id, new AgentError('CANCELLED', `invoke worker ${id}: agent shutting down`))),
    );
  }

  async #closeLane(id: string, reason: AgentError): Promise<void> {
    const lane = this.#lanes.get(id);
    if (!lane) return;
    this.#lanes.delete(id);
    // Aborting first gives every call its own precise error; destroy() then drops the socket
    // and anything undici still holds (an abandoned request waiting for its connect).
    for (const ac of lane.calls) ac.abort(reason);
    await lane.dispatcher.destroy(reason).catch(() => undefined);
  }

  /** The worker's lane, created on first use (one dispatcher per worker, docs/go-agent.md#w9). */
  #lane(id: string, origin: string): Lane {
    const existing = this.#lanes.get(id);
    if (existing?.origin === origin) return existing;
    if (existing) {
      // Same id, new address: should not happen (ids are unique, IPs fixed per worker), but
      // never send to a stale address.
      void this.#closeLane(id, new AgentError('FAILED_PRECONDITION', `invoke worker ${id}: worker address changed`));
    }
    const lane: Lane = { id, origin, dispatcher: this.#factory(origin), queue: new SerialQueue(), calls: new Set() };
    this.#lanes.set(id, lane);
    return lane;
  }

  /** Waits `ms`, or rejects with the signal's reason (always an AgentError here). */
  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        cancel();
        reject(signal.reason as Error);
      };
      const cancel = this.#clock.setTimer(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * One HTTP exchange. Resolves with the response, or `not-ready` when the connection failed
   * before anything was written (safe to try again); rejects with an AgentError otherwise.
   */
  #attempt(lane: Lane, req: InvokeRequest, headers: Record<string, string>, signal: AbortSignal, call: CallState): Promise<AttemptResult> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    const max = this.#maxResponseBytes;
    const what = `invoke worker ${lane.id}`;
    return new Promise<AttemptResult>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | undefined;
      let settled = false;
      let sent = false;
      let statusCode = 0;
      let rawHeaders: Record<string, string | string[] | undefined> = {};
      let chunks: Buffer[] = [];
      let size = 0;

      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = (): void => {
        const reason = signal.reason as AgentError;
        // Before onRequestStart there is no controller: the request may still sit in undici's
        // queue or wait for its connect. We answer now; onRequestStart aborts it unsent.
        controller?.abort(reason);
        settle(() => {
          reject(reason);
        });
      };
      const tooLarge = (got: string): AgentError =>
        new AgentError('RESOURCE_EXHAUSTED', `${what}: response body ${got} exceeds the limit of ${max} bytes (AGENT_INVOKE_MAX_RESPONSE_SIZE)`);

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart: (c) => {
          controller = c;
          if (settled) {
            // Abandoned (deadline, cancel, closeWorker) before it was written: abort here and
            // undici writes nothing (client-h1 checks `aborted` right after this callback).
            c.abort(new AgentError('CANCELLED', `${what}: abandoned before it was sent`));
            return;
          }
          sent = true;
          call.requestSent = true;
          call.phase = 'sent';
        },
        onResponseStart: (c, status, h) => {
          if (settled) return;
          const length = h['content-length'];
          // Fail early on a declared length over the cap; a chunked body is counted below.
          if (typeof length === 'string' && /^\d+$/.test(length) && Number(length) > max) {
            c.abort(tooLarge(`of ${length} bytes (content-length)`));
            return;
          }
          statusCode = status;
          rawHeaders = h;
          chunks = [];
          size = 0;
        },
        onResponseData: (c, chunk) => {
          if (settled) return;
          size += chunk.length;
          if (size > max) {
            // Stop at the cap: abort drops the socket, so the rest is never read.
            c.abort(tooLarge(`of more than ${max} bytes`));
            return;
          }
          chunks.push(chunk);
        },
        onResponseEnd: () => {
          settle(() => {
            resolve({
              kind: 'response',
              response: { statusCode, headers: responseHeaders(rawHeaders), body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) },
            });
          });
        },
        onResponseError: (_c, err) => {
          settle(() => {
            if (err instanceof AgentError) {
              reject(err);
              return;
            }
            const code = codeOf(err);
            if (code !== undefined && CLOSED_CODES.has(code)) {
              reject(new AgentError('FAILED_PRECONDITION', `${what}: worker destroyed`, { cause: err }));
            } else if (sent) {
              // docs/go-agent.md#w10: the worker may have received the request and run the function; the
              // gateway would re-run it on UNAVAILABLE, so this must not be UNAVAILABLE.
              reject(new AgentError('INTERNAL', `${what}: worker closed the connection after the request was sent: ${describe(err)}`, { cause: err }));
            } else if (code !== undefined && NOT_READY_CODES.has(code)) {
              resolve({ kind: 'not-ready', cause: err });
            } else {
              reject(new AgentError('INTERNAL', `${what}: request failed before it was sent: ${describe(err)}`, { cause: err }));
            }
          });
        },
      };

      signal.addEventListener('abort', onAbort, { once: true });
      try {
        lane.dispatcher.dispatch(
          { method: 'POST', path: req.path, headers, body: req.payload, headersTimeout: 0, bodyTimeout: 0, blocking: true },
          handler,
        );
      } catch (err) {
        handler.onResponseError?.(undefined as unknown as Dispatcher.DispatchController, err as Error);
      }
    });
  }
}

/** The worker's origin, from the agent's state only. */
function workerOrigin(target: InvokeTarget): string {
  const family = net.isIP(target.ipAddress);
  if (family === 0) {
    throw new AgentError('FAILED_PRECONDITION', `invoke worker ${target.id}: worker has no usable IP address (${JSON.stringify(target.ipAddress)})`);
  }
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
    throw new AgentError('FAILED_PRECONDITION', `invoke worker ${target.id}: worker has no usable port (${target.port})`);
  }
  return family === 6 ? `http://[${target.ipAddress}]:${target.port}` : `http://${target.ipAddress}:${target.port}`;
}

/** The DEADLINE_EXCEEDED error for the phase the call was in when its timeout fired. */
function deadlineError(what: string, origin: string, timeoutMs: number, call: CallState): AgentError {
  switch (call.phase) {
    case 'queued':
      return new AgentError('DEADLINE_EXCEEDED', `${what}: timed out after ${timeoutMs} ms waiting behind an earlier invocation of this worker (request not sent)`);
    case 'connecting': {
      const last = call.lastConnectError === undefined ? '' : `; last error: ${describe(call.lastConnectError)}`;
      return new AgentError(
        'DEADLINE_EXCEEDED',
        `${what}: worker at ${origin} did not accept the request within ${timeoutMs} ms (${call.attempts} connection attempt${call.attempts === 1 ? '' : 's'}${last}; request not sent)`,
        { cause: call.lastConnectError },
      );
    }
    case 'sent':
      return new AgentError('DEADLINE_EXCEEDED', `${what}: no complete response from the worker within ${timeoutMs} ms`);
  }
}

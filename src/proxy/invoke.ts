/**
 * InvokeWorker's queueing and serialisation per worker: POSTs one payload to a worker's Lambda
 * RIE and returns its status, headers and body (docs/contract.md#invokeworker). Fixes the
 * reference agent's docs/go-agent.md#w9 (a new transport per call, never closed) and
 * docs/go-agent.md#w10 (every error retried, even after the request was sent; cancel reported
 * as a deadline). The HTTP exchange itself (undici request, response cap, sent/not-sent) is
 * exchange.ts.
 *
 * The rules that shape this file:
 * - One single-connection undici `Client` per worker, kept until `closeWorker` (docs/go-agent.md#w9); one
 *   request at a time per worker, the rest wait in a FIFO (RIE serves one invocation at a time,
 *   docs/contract.md#worker-contract), at most `maxQueue` of them.
 * - A request not yet sent (exchange.ts says so) is retried with backoff until the deadline;
 *   a sent one never is (docs/go-agent.md#w10, docs/contract.md#invokeworker).
 * - Every time limit is our own timer feeding an AbortController: undici's headers/body
 *   timeouts run on ~1 s "fast timers" (docs/design.md#undici), so they are disabled.
 * - Error codes follow what the gateway does with them (docs/contract.md#gateway): it re-runs the payload on a
 *   new worker after UNAVAILABLE, DEADLINE_EXCEEDED or NOT_FOUND, so a connection lost after
 *   sending is INTERNAL, never UNAVAILABLE.
 */
import type { Dispatcher } from 'undici';
import { AgentError, abortError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import {
  READY_BACKOFF_INITIAL_MS,
  READY_BACKOFF_MAX_MS,
  createWorkerDispatcher,
  deadlineError,
  describe,
  exchange,
  workerOrigin,
  type CallState,
} from './exchange.js';
import { checkPath, requestHeaders } from './headers.js';
import { SerialQueue } from '../concurrency/serial-queue.js';
import type { InvokeRequest, InvokeResponse, InvokeTarget } from './types.js';

// Importable from here as before the exchange had its own module.
export {
  CONNECT_TIMEOUT_MS,
  KEEP_ALIVE_TIMEOUT_MS,
  READY_BACKOFF_INITIAL_MS,
  READY_BACKOFF_MAX_MS,
  createWorkerDispatcher,
} from './exchange.js';

/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

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
  readonly metrics?:
    Pick<AgentMetrics, 'invokeDuration' | 'invokeRequestBytes' | 'invokeResponseBytes' | 'invokeQueued' | 'invokeQueueFull'> | undefined;
  /** Builds the dispatcher for one worker origin; default a single-connection keep-alive Client. */
  readonly dispatcherFactory?: ((origin: string) => Dispatcher) | undefined;
  readonly clock?: InvokerClock | undefined;
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
export class WorkerProxy {
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
    if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes < 0)
      throw new RangeError(`invalid maxResponseBytes: ${maxResponseBytes}`);
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
          const result = await exchange(
            { id: lane.id, dispatcher: lane.dispatcher, maxResponseBytes: this.#maxResponseBytes },
            req,
            headers,
            ac.signal,
            call,
          );
          if (result.kind === 'response') {
            response = result.response;
            return response;
          }
          call.lastConnectError = result.cause;
          const stopped = target.stoppedReason?.();
          if (stopped !== undefined)
            throw new AgentError('FAILED_PRECONDITION', `${what}: ${stopped} before accepting the request (request not sent)`);
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
}

/**
 * One HTTP exchange with a worker's Lambda RIE (docs/contract.md#invokeworker): the undici
 * request on the worker's connection, the response cap, and the rules that tell "not sent, try
 * again" from "sent, never retry". The queueing per worker, the call's deadline timer and the
 * retry loop are invoke.ts's.
 *
 * - A request counts as sent from undici's `onRequestStart`, which runs on a connected socket
 *   right before the first byte is written. Before it, a failure cannot have reached the
 *   worker and a network error is "not ready yet"; after it, nothing is retried, because a
 *   function must never run twice because of the agent (docs/go-agent.md#w10).
 * - undici's headers/body timeouts run on ~1 s "fast timers" (docs/design.md#undici), so they
 *   are disabled; the caller's signal is the only time limit.
 */
import net from 'node:net';
import { Client, type Dispatcher } from 'undici';
import { AgentError, errorText } from '../errors.js';
import { responseHeaders } from './headers.js';
import type { InvokeRequest, InvokeResponse, InvokeTarget } from './types.js';

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

/** The dispatcher `WorkerProxy` uses unless told otherwise: one keep-alive connection, no undici timers. */
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

/** The worker's side of one exchange. */
export interface WorkerEndpoint {
  readonly id: string;
  /** The worker's single-connection dispatcher (createWorkerDispatcher). */
  readonly dispatcher: Dispatcher;
  readonly maxResponseBytes: number;
}

/** Where a call is, for error messages and the log line. */
export interface CallState {
  phase: 'queued' | 'connecting' | 'sent';
  attempts: number;
  lastConnectError: unknown;
  requestSent: boolean;
}

export type AttemptResult =
  { readonly kind: 'response'; readonly response: InvokeResponse } | { readonly kind: 'not-ready'; readonly cause: unknown };

function codeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

export function describe(err: unknown): string {
  const code = codeOf(err);
  const text = errorText(err);
  return code !== undefined && !text.includes(code) ? `${code}: ${text}` : text;
}

/**
 * One HTTP exchange. Resolves with the response, or `not-ready` when the connection failed
 * before anything was written (safe to try again); rejects with an AgentError otherwise.
 */
export function exchange(
  w: WorkerEndpoint,
  req: InvokeRequest,
  headers: Record<string, string>,
  signal: AbortSignal,
  call: CallState,
): Promise<AttemptResult> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  const max = w.maxResponseBytes;
  const what = `invoke worker ${w.id}`;
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
      new AgentError(
        'RESOURCE_EXHAUSTED',
        `${what}: response body ${got} exceeds the limit of ${max} bytes (AGENT_INVOKE_MAX_RESPONSE_SIZE)`,
      );

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
            response: {
              statusCode,
              headers: responseHeaders(rawHeaders),
              body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size),
            },
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
            reject(
              new AgentError('INTERNAL', `${what}: worker closed the connection after the request was sent: ${describe(err)}`, {
                cause: err,
              }),
            );
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
      w.dispatcher.dispatch(
        { method: 'POST', path: req.path, headers, body: req.payload, headersTimeout: 0, bodyTimeout: 0, blocking: true },
        handler,
      );
    } catch (err) {
      handler.onResponseError?.(undefined as unknown as Dispatcher.DispatchController, err as Error);
    }
  });
}

/** The worker's origin, from the agent's state only. */
export function workerOrigin(target: InvokeTarget): string {
  const family = net.isIP(target.ipAddress);
  if (family === 0) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `invoke worker ${target.id}: worker has no usable IP address (${JSON.stringify(target.ipAddress)})`,
    );
  }
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
    throw new AgentError('FAILED_PRECONDITION', `invoke worker ${target.id}: worker has no usable port (${target.port})`);
  }
  return family === 6 ? `http://[${target.ipAddress}]:${target.port}` : `http://${target.ipAddress}:${target.port}`;
}

/** The DEADLINE_EXCEEDED error for the phase the call was in when its timeout fired. */
export function deadlineError(what: string, origin: string, timeoutMs: number, call: CallState): AgentError {
  switch (call.phase) {
    case 'queued':
      return new AgentError(
        'DEADLINE_EXCEEDED',
        `${what}: timed out after ${timeoutMs} ms waiting behind an earlier invocation of this worker (request not sent)`,
      );
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

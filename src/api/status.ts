/**
 * The protocol edge of every RPC: the one table from AgentError codes to gRPC status codes
 * (`toStatus`), and `unary()`, the adapter that turns an async handler into a grpc-js unary
 * handler. grpc-js ignores the promise an async handler returns (a rejection would crash the
 * process) and sends any error with an integer `code` out as-is, so nothing reaches grpc-js
 * except through here: every call is answered exactly once, with a code we chose, logged once
 * and counted once. Facts behind this: docs/design.md#grpc-js, docs/errors.md#conventions.
 */
import * as grpc from '@grpc/grpc-js';
import { AgentError, abortError, errorText, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { redactHostPaths } from '../redact.js';

/** AgentError code → gRPC status: the only place this mapping exists (docs/errors.md#codes). */
export const STATUS_BY_CODE: Readonly<Record<ErrorCode, grpc.status>> = Object.freeze({
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  CANCELLED: grpc.status.CANCELLED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  INTERNAL: grpc.status.INTERNAL,
});

/** The gRPC status for an AgentError code. */
export function toStatus(code: ErrorCode): grpc.status {
  return STATUS_BY_CODE[code];
}

/** The name of a gRPC status (`'OK'`, `'NOT_FOUND'`, …), used as the `code` label and log field. */
export function statusName(code: grpc.status): string {
  return grpc.status[code];
}

/**
 * Longest `details` text we send. The message travels in the `grpc-message` trailer, and grpc
 * clients (the gateway's Python one included) refuse metadata over 8 KiB by default; a cause
 * from a plugin or registry can be arbitrarily long.
 */
export const MAX_DETAILS_CHARS = 2048;

/** setTimeout's largest delay; a deadline further away than ~24.8 days is treated as none. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A 'cancelled' event this close to the deadline is the deadline: timers and the wall clock
 * disagree by a millisecond or so, and a real client cancel that close makes no difference.
 */
const DEADLINE_SLACK_MS = 20;

/** Longest id value copied into a log line from an unvalidated request. */
const MAX_LOGGED_ID_CHARS = 128;

/**
 * Converts anything a handler threw into the AgentError we answer with. An AgentError keeps its
 * code; anything else thrown after the call was cancelled or timed out is that abort
 * (undici and grpc-js reject with their own abort errors); anything else is INTERNAL, with the
 * underlying text (docs/contract.md#rules: "the message carries the underlying error").
 */
export function toAgentError(err: unknown, signal: AbortSignal | undefined, what: string): AgentError {
  if (err instanceof AgentError) return err;
  if (signal?.aborted) {
    const aborted = abortError(signal, what);
    return new AgentError(aborted.code, aborted.message, { cause: err });
  }
  return new AgentError('INTERNAL', `${what}: internal error: ${errorText(err)}`, { cause: err });
}

/**
 * The `{ code, details }` object grpc-js sends as the call's status. Host file paths are
 * replaced on the way out whatever module wrote the message (the rpc log line keeps them).
 */
export function toServiceError(err: AgentError): Partial<grpc.StatusObject> & { code: grpc.status; details: string } {
  const text = redactHostPaths(err.message);
  const details = text.length > MAX_DETAILS_CHARS ? `${text.slice(0, MAX_DETAILS_CHARS - 1)}…` : text;
  return { code: toStatus(err.code), details, metadata: new grpc.Metadata() };
}

/** Counts RPC handlers that have started and not yet answered, so shutdown can wait for them. */
export class InflightTracker {
  #count = 0;
  #waiters: (() => void)[] = [];

  /** Handlers running now. */
  get count(): number {
    return this.#count;
  }

  enter(): void {
    this.#count++;
  }

  leave(): void {
    this.#count = Math.max(0, this.#count - 1);
    if (this.#count === 0) {
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves once no handler is running (at once when none is). */
  drained(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** Fields a handler adds to its RPC's log line. Ids and names only: never env, headers or payloads. */
export type LogFields = Readonly<Record<string, string | number | boolean>>;

/** What a handler gets besides the request. */
export interface RpcContext {
  /** Fires when the client cancels (reason: AbortError) or the call's deadline passes (TimeoutError). */
  readonly signal: AbortSignal;
  /** Adds fields to this RPC's one log line (for example the id EnsureContainer created). */
  annotate(fields: LogFields): void;
}

/** An RPC implementation: validated by itself, throwing AgentError for every failure. */
export type RpcHandler<Req, Res> = (req: Req, ctx: RpcContext) => Promise<Res>;

export interface UnaryDeps {
  /** The RPC log: one line per call. */
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** Counts running handlers for graceful shutdown; optional for tests. */
  readonly inflight?: InflightTracker | undefined;
}

/** Milliseconds since the epoch of a grpc-js deadline; Infinity when the client set none. */
function deadlineMs(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/** `container_id` / `owner_id` as sent, shortened, so even a rejected request is attributable. */
function requestIds(req: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof req !== 'object' || req === null) return out;
  const r = req as Record<string, unknown>;
  const take = (key: string, as: string): void => {
    const v = r[key];
    if (typeof v === 'string' && v !== '') out[as] = v.length > MAX_LOGGED_ID_CHARS ? `${v.slice(0, MAX_LOGGED_ID_CHARS)}…` : v;
  };
  take('container_id', 'containerId');
  take('owner_id', 'owner');
  return out;
}

/**
 * Codes that mean the agent or its backends are in trouble (warn), as opposed to a caller's
 * mistake or an ordinary outcome (info). INTERNAL is logged at error level with the stack.
 */
const WARN_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.UNAVAILABLE,
]);

/**
 * Wraps `handler` as a grpc-js unary handler for `method`.
 *
 * - The call's `'cancelled'` event and its deadline become `ctx.signal`. grpc-js 1.14 also emits
 *   `'cancelled'` after every normal completion, so the event counts only before we answered.
 * - A call whose deadline has already passed (or that was cancelled before it reached us) is
 *   answered DEADLINE_EXCEEDED / CANCELLED without running the handler.
 * - The handler's result or error is sent exactly once; a success that arrives after the call
 *   was aborted is answered with the abort's code, because that is what the client saw.
 * - One log line per call (method, code, ms, container id, owner) and `esb_agent_rpc_total` /
 *   `esb_agent_rpc_duration_seconds` by method and code.
 */
export function unary<Req, Res>(method: string, handler: RpcHandler<Req, Res>, deps: UnaryDeps): grpc.handleUnaryCall<Req, Res> {
  const { log, metrics, inflight } = deps;
  return (call, callback) => {
    const startedAt = performance.now();
    const controller = new AbortController();
    const fields: Record<string, string | number | boolean> = { method, ...requestIds(call.request) };
    let answered = false;
    let timer: NodeJS.Timeout | undefined;

    const deadline = deadlineMs(call.getDeadline());
    const onCancelled = (): void => {
      if (answered || controller.signal.aborted) return;
      // grpc-js also ends a call whose deadline passed with 'cancelled'; name it for what it is.
      // Its timer may fire a moment before the wall clock reaches the deadline, hence the slack.
      if (Date.now() >= deadline - DEADLINE_SLACK_MS) controller.abort(new DOMException(`${method} exceeded its deadline`, 'TimeoutError'));
      else controller.abort(new DOMException(`${method} was cancelled by the client`, 'AbortError'));
    };
    call.on('cancelled', onCancelled);
    inflight?.enter();

    const ctx: RpcContext = {
      signal: controller.signal,
      annotate: (extra) => {
        Object.assign(fields, extra);
      },
    };

    const answer = (err: AgentError | undefined, res: Res | undefined, internal: unknown): void => {
      if (answered) return;
      answered = true;
      if (timer !== undefined) clearTimeout(timer);
      call.removeListener('cancelled', onCancelled);
      const code = err === undefined ? grpc.status.OK : toStatus(err.code);
      const name = statusName(code);
      try {
        if (err === undefined) callback(null, res);
        else callback(toServiceError(err));
      } catch (cbErr) {
        // grpc-js reports its own send failures on the call; this guards against a throw here
        // turning into an unhandled rejection.
        log.error({ method, err: cbErr }, 'failed to send the RPC answer');
      }
      const ms = performance.now() - startedAt;
      metrics.rpcTotal.inc({ method, code: name });
      metrics.rpcDuration.observe({ method, code: name }, ms / 1000);
      const line = { ...fields, code: name, ms: Math.round(ms * 10) / 10 };
      if (err === undefined) log.info(line, 'rpc');
      else if (code === grpc.status.INTERNAL) log.error({ ...line, error: err.message, err: internal ?? err }, 'rpc');
      else if (WARN_CODES.has(code)) log.warn({ ...line, error: err.message }, 'rpc');
      else log.info({ ...line, error: err.message }, 'rpc');
      inflight?.leave();
    };

    const run = async (): Promise<Res> => {
      if (call.cancelled) {
        // Cancelled between arrival and dispatch: nothing to do, the client is gone.
        onCancelled();
        throw abortError(controller.signal, method);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        // grpc-js still dispatches a call whose deadline passed in transit (docs/design.md#grpc-js).
        throw new AgentError('DEADLINE_EXCEEDED', `${method}: the call's deadline had already passed when it arrived; nothing was done`);
      }
      if (remaining <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          if (!answered && !controller.signal.aborted) {
            controller.abort(new DOMException(`${method} exceeded its ${Math.round(remaining)} ms deadline`, 'TimeoutError'));
          }
        }, remaining);
      }
      return handler(call.request, ctx);
    };

    run()
      .then(
        (res) => {
          if (controller.signal.aborted) answer(abortError(controller.signal, method), undefined, undefined);
          else answer(undefined, res, undefined);
        },
        (thrown: unknown) => {
          const err = toAgentError(thrown, controller.signal, method);
          answer(err, undefined, thrown instanceof AgentError ? undefined : thrown);
        },
      )
      .catch((bug: unknown) => {
        // Only logging or metrics could throw here; never let it become an unhandled rejection.
        log.error({ method, err: bug }, 'RPC bookkeeping failed');
      });
  };
}

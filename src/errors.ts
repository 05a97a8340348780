/**
 * The agent's one error type. Every module converts the errors of the system it talks to
 * (containerd, CNI plugins, registries, dockerd, workers) into an AgentError at its edge, so
 * that callers tell failures apart by `code` only. `api/status.ts` is the one place where a
 * code becomes a gRPC status. This module imports nothing.
 */

/** Failure classes, named like the gRPC codes of the contract (docs/errors.md#codes) they map to. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'DEADLINE_EXCEEDED'
  | 'CANCELLED'
  | 'UNAVAILABLE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

/** An error with a contract code; `message` says what was wrong, `cause` keeps the original. */
export class AgentError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentError';
    this.code = code;
  }
}

/** True when `err` is an AgentError with one of the given codes. */
export function hasCode(err: unknown, ...codes: ErrorCode[]): err is AgentError {
  return err instanceof AgentError && codes.includes(err.code);
}

export const isNotFound = (err: unknown): err is AgentError => hasCode(err, 'NOT_FOUND');
export const isAlreadyExists = (err: unknown): err is AgentError => hasCode(err, 'ALREADY_EXISTS');

/** The text of any thrown value, for messages and logs. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * Turns an AbortSignal's reason into an AgentError: a deadline → DEADLINE_EXCEEDED, anything
 * else (client cancel, shutdown) → CANCELLED, unless the reason already is an AgentError.
 */
export function abortError(signal: AbortSignal, what: string): AgentError {
  const reason: unknown = signal.reason;
  if (reason instanceof AgentError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new AgentError('DEADLINE_EXCEEDED', `${what}: deadline exceeded`, { cause: reason });
  }
  return new AgentError('CANCELLED', `${what}: cancelled`, { cause: reason });
}

/** Throws the abort error if `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

/**
 * The `code` of a Node system error (`ENOENT`, `EEXIST`, ...), or undefined: the one way to
 * read it, instead of `(err as NodeJS.ErrnoException).code` casts.
 */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

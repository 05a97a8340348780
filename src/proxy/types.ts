/**
 * The shapes of one invocation, shared by the API layer (which builds them from its own
 * worker state) and the proxy (which sends them). No undici here, so api/ stays free of it.
 */

/** The worker to call; comes from the agent's own state, never from the request (no SSRF). */
export interface InvokeTarget {
  readonly id: string;
  readonly ipAddress: string;
  readonly port: number;
  /**
   * Asked between readiness retries: a text when the worker has stopped (e.g. it crashed
   * before listening), so the call fails FAILED_PRECONDITION at once instead of retrying a
   * dead address until the timeout.
   */
  readonly stoppedReason?: (() => string | undefined) | undefined;
}

export interface InvokeRequest {
  /** Origin-form path, already defaulted and normalised by the caller. */
  readonly path: string;
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  /** Bound on the whole call (queue, readiness, request, body); ≤ 0 → the default. */
  readonly timeoutMs: number;
}

export interface InvokeResponse {
  readonly statusCode: number;
  /** Lower-case names, hop-by-hop removed, repeated values joined with `, `. */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/**
 * Single-flight for image pulls (reference weakness docs/go-agent.md#w15: no pull de-duplication, no timeout):
 * concurrent callers with the same key share one run. The run gets its own signal — never a
 * caller's — bounded by a timeout, so one caller giving up does not fail the others; each
 * caller stops waiting on its own signal. When every caller has given up, the run is
 * cancelled too, so an abandoned pull leaves nothing behind (docs/contract.md#rules).
 */
import { AgentError, abortError } from '../errors.js';

interface Flight<T> {
  readonly promise: Promise<T>;
  readonly controller: AbortController;
  waiters: number;
}

/** Shares one run per key among concurrent callers; see the module comment. */
export class SingleFlight<T> {
  readonly #flights = new Map<string, Flight<T>>();
  readonly #timeoutMs: number;

  /** @param timeoutMs bound on one shared run; past it the run's signal fires (DEADLINE_EXCEEDED). */
  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  /** Runs in flight now. */
  get size(): number {
    return this.#flights.size;
  }

  /**
   * Joins the run for `key`, starting `fn` when none is in flight.
   *
   * @throws whatever the run throws; CANCELLED or DEADLINE_EXCEEDED (from `signal`'s reason)
   *   when this caller's signal fires first.
   */
  run(key: string, fn: (signal: AbortSignal) => Promise<T>, signal: AbortSignal, what: string): Promise<T> {
    if (signal.aborted) return Promise.reject(abortError(signal, what));
    let flight = this.#flights.get(key);
    if (!flight || flight.controller.signal.aborted) {
      const controller = new AbortController();
      const timeoutMs = this.#timeoutMs;
      const timer = setTimeout(() => {
        controller.abort(new AgentError('UNAVAILABLE', `${what}: did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      // The run's own I/O keeps the process alive; the timer alone must not.
      timer.unref();
      const promise = Promise.resolve().then(() => fn(controller.signal));
      const f: Flight<T> = { promise, controller, waiters: 0 };
      const forget = (): void => {
        clearTimeout(timer);
        if (this.#flights.get(key) === f) this.#flights.delete(key);
      };
      promise.then(forget, forget);
      this.#flights.set(key, f);
      flight = f;
    }
    const f = flight;
    f.waiters++;
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const onAbort = (): void => {
        left = true;
        f.waiters--;
        if (f.waiters === 0) f.controller.abort(new AgentError('CANCELLED', `${what}: cancelled, every caller gave up`));
        reject(abortError(signal, what));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      f.promise.then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          if (left) return;
          f.waiters--;
          resolve(v);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          if (left) return;
          f.waiters--;
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /** Cancels every run in flight (agent shutdown). */
  abortAll(reason: AgentError): void {
    for (const f of this.#flights.values()) f.controller.abort(reason);
  }
}

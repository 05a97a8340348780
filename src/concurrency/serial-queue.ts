/**
 * A FIFO lock with abortable waits: one holder at a time, waiters served in arrival order. The
 * invoker keeps one per worker because the Lambda RIE serves one invocation at a time
 * (docs/contract.md#worker-contract); undici's own queue could order requests too, but a request waiting
 * there cannot leave it cleanly when its deadline passes, and we must know it was never sent.
 */

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/** FIFO mutual exclusion; `acquire` then exactly one `release` per successful acquire. */
export class SerialQueue {
  #busy = false;
  readonly #waiters: Waiter[] = [];

  /** Waiters not yet holding the lock. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** True while someone holds the lock. */
  get busy(): boolean {
    return this.#busy;
  }

  /**
   * Resolves when the caller holds the lock. If `signal` fires first, the caller leaves the
   * queue and the promise rejects with `signal.reason` (the lock is then not held).
   */
  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(signal.reason as Error);
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Hands the lock to the oldest waiter, or frees it. */
  release(): void {
    const next = this.#waiters.shift();
    if (next === undefined) {
      this.#busy = false;
      return;
    }
    next.signal.removeEventListener('abort', next.onAbort);
    next.resolve();
  }
}

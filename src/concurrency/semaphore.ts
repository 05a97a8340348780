/**
 * The cap on CNI plugin processes running at once (CniNetwork). One-at-a-time per CNI
 * container id (spec 1.0: no parallel operations on one container) is src/keyed-lock.ts.
 * A waiting caller gives up when its AbortSignal fires.
 */
import { abortError } from '../errors.js';

/** A counting semaphore; waiters leave the queue when their signal fires (→ abortError). */
export class Semaphore {
  #free: number;
  readonly #waiters: { wake: () => void }[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  /** Resolves with a release function (calling it twice is harmless) once a slot is free. */
  acquire(signal: AbortSignal | undefined, what: string): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal, what));
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        wake: (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.#releaser());
        },
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(abortError(signal!, what));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  #releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#waiters.shift();
      if (next)
        next.wake(); // the slot passes straight to the next waiter
      else this.#free++;
    };
  }
}

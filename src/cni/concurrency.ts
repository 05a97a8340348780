/**
 * The two concurrency limits of CniNetwork: a cap on plugin processes running at once, and
 * one-at-a-time per CNI container id (spec 1.0: no parallel operations on one container).
 * Both let a waiting caller give up when its AbortSignal fires.
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
      if (next) next.wake(); // the slot passes straight to the next waiter
      else this.#free++;
    };
  }
}

/** Runs functions one at a time per key; waiting callers give up when their signal fires. */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `fn` after every earlier call for `key` has settled; rejects with abortError if `signal` fires first. */
  async run<T>(key: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    try {
      await waitOrAbort(prev, signal, `CNI ${key}`);
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

function waitOrAbort(p: Promise<void>, signal: AbortSignal | undefined, what: string): Promise<void> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(abortError(signal, what));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      reject(abortError(signal, what));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
    );
  });
}

/**
 * One queue per key: a call starts once every earlier call for the same key has settled, so
 * that operations on one object (a worker, a netns, a CNI attachment) never interleave while
 * different objects proceed in parallel. A waiting caller may give up when its signal fires.
 */
import { abortError } from '../errors.js';

/** Runs functions one at a time per key; waiting callers give up when their signal fires. */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();
  readonly #label: string;

  /** `label` names the kind of key in abort messages (e.g. `CNI` → "CNI <key> cancelled"). */
  constructor(label = '') {
    this.#label = label;
  }

  /** True while a call for `key` runs or waits. */
  has(key: string): boolean {
    return this.#tails.has(key);
  }

  /**
   * Runs `fn` after every earlier call for `key` has settled (whatever its outcome); rejects
   * with abortError if `signal` fires while waiting.
   */
  async run<T>(key: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    try {
      await waitOrAbort(prev, signal, this.#label === '' ? key : `${this.#label} ${key}`);
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

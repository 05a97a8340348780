/**
 * One queue per key: `run(key, fn)` starts `fn` once every earlier call for the same key has
 * settled (whatever its outcome). Runtimes use it so that Destroy, Pause and Resume of one
 * worker never interleave, while different workers proceed in parallel.
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** True while a call for `key` runs or waits. */
  has(key: string): boolean {
    return this.#tails.has(key);
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const settled = run.catch(() => undefined);
    this.#tails.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.#tails.get(key) === settled) this.#tails.delete(key);
    }
  }
}

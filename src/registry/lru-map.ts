/**
 * A Map with a size bound that forgets its least recently used entry first. For caches keyed
 * by strings a caller or a registry chooses (repository scopes, registry names), which would
 * otherwise grow for as long as the agent runs.
 */
export class LruMap<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, V>();

  /** @param max entries kept (at least 1). */
  constructor(max: number) {
    this.#max = Math.max(1, max);
  }

  get size(): number {
    return this.#map.size;
  }

  /** The value, marked as the most recently used. */
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v === undefined) return undefined;
    this.#map.delete(key);
    this.#map.set(key, v);
    return v;
  }

  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    while (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value as K;
      this.#map.delete(oldest);
    }
  }

  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  /** Removes every entry `drop` says is stale (expired tokens). */
  prune(drop: (value: V, key: K) => boolean): void {
    for (const [k, v] of this.#map) if (drop(v, k)) this.#map.delete(k);
  }
}

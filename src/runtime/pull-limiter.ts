/**
 * Bounds image pulls and unpacks (both runtimes): at most AGENT_MAX_CONCURRENT_PULLS run at
 * once, up to MAX_QUEUED_PULLS more wait their turn, and beyond that a pull is refused at once
 * with RESOURCE_EXHAUSTED (the host is busy; the gateway may retry later). Many distinct
 * image names would otherwise each start a download and an unpack, and saturate the disk, the
 * network and the CPUs of a small host together.
 */
import { AgentError, abortError } from '../errors.js';

/** Bound on one shared pull (resolve + download + unpack), whatever its callers do (both runtimes). */
export const DEFAULT_PULL_TIMEOUT_MS = 10 * 60_000;

/** Pulls that may wait for a slot; more are refused. */
export const MAX_QUEUED_PULLS = 32;

export interface PullLimiterOptions {
  readonly max: number;
  readonly maxQueued?: number | undefined;
  /** Called whenever the number running or waiting changes (gauges). */
  readonly onChange?: ((running: number, queued: number) => void) | undefined;
  /** Called for every refused pull (counter). */
  readonly onRefused?: (() => void) | undefined;
}

interface Waiter {
  readonly start: () => void;
}

export class PullLimiter {
  readonly #max: number;
  readonly #maxQueued: number;
  readonly #o: PullLimiterOptions;
  #running = 0;
  readonly #queue: Waiter[] = [];

  constructor(o: PullLimiterOptions) {
    this.#max = Math.max(1, o.max);
    this.#maxQueued = o.maxQueued ?? MAX_QUEUED_PULLS;
    this.#o = o;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Runs `fn` when a slot is free.
   *
   * @throws AgentError RESOURCE_EXHAUSTED when the queue is full; CANCELLED/DEADLINE_EXCEEDED
   *   when `signal` fires while waiting; whatever `fn` throws.
   */
  async run<T>(what: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    if (signal.aborted) throw abortError(signal, what);
    if (this.#running >= this.#max) {
      if (this.#queue.length >= this.#maxQueued) {
        this.#o.onRefused?.();
        throw new AgentError(
          'RESOURCE_EXHAUSTED',
          `${what}: ${this.#running} image pulls are running and ${this.#queue.length} waiting (AGENT_MAX_CONCURRENT_PULLS=${this.#max}); try again later`,
        );
      }
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          start: () => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        const onAbort = (): void => {
          const i = this.#queue.indexOf(waiter);
          if (i !== -1) this.#queue.splice(i, 1);
          this.#changed();
          reject(abortError(signal, what));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        this.#queue.push(waiter);
        this.#changed();
      });
    } else {
      this.#running++;
      this.#changed();
    }
    try {
      return await fn();
    } finally {
      const next = this.#queue.shift();
      // The slot passes straight to the next waiter, so `running` stays the same.
      if (next) next.start();
      else this.#running--;
      this.#changed();
    }
  }

  #changed(): void {
    this.#o.onChange?.(this.#running, this.#queue.length);
  }
}

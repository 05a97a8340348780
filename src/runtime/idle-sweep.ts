/**
 * Idle sweep (AGENT_WORKER_IDLE_TTL_SECONDS, off when 0): destroys workers that nobody used
 * (Ensure, Resume, Invoke) for longer than the TTL, whatever their status or owner. It is the
 * safety net for a gateway that was recreated under a new owner id and will never destroy the
 * workers of its previous life. Runtime-neutral: it only needs list() and destroy().
 */
import { errorText } from '../errors.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { Runtime } from './runtime.js';

/** Sweeps at least this often, and at most every TTL/2, so a worker outlives its TTL by < TTL/2. */
const MAX_SWEEP_INTERVAL_MS = 30_000;
const DESTROY_TIMEOUT_MS = 60_000;

export interface IdleSweeperOptions {
  readonly runtime: Pick<Runtime, 'list' | 'destroy'>;
  readonly ttlSeconds: number;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** Sweep interval override (tests). */
  readonly intervalMs?: number;
}

export class IdleSweeper {
  readonly #o: IdleSweeperOptions;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();

  constructor(o: IdleSweeperOptions) {
    this.#o = o;
    this.#log = o.log.child({ module: 'idle-sweep' });
  }

  get intervalMs(): number {
    return this.#o.intervalMs ?? Math.max(1000, Math.min(MAX_SWEEP_INTERVAL_MS, (this.#o.ttlSeconds * 1000) / 2));
  }

  start(): void {
    if (this.#o.ttlSeconds <= 0 || this.#timer) return;
    this.#log.info({ ttlSeconds: this.#o.ttlSeconds, intervalMs: this.intervalMs }, 'idle sweep on');
    this.#timer = setInterval(() => {
      this.#running = this.#running.then(() => this.sweep());
    }, this.intervalMs).unref();
  }

  /** Destroys every worker idle for longer than the TTL at `nowSeconds`; returns their ids. */
  async sweep(nowSeconds = Math.floor(Date.now() / 1000)): Promise<string[]> {
    const cutoff = nowSeconds - this.#o.ttlSeconds;
    const idle = this.#o.runtime.list().filter((w) => w.lastUsedAt < cutoff);
    const destroyed: string[] = [];
    for (const w of idle) {
      try {
        await this.#o.runtime.destroy(w.id, { signal: AbortSignal.timeout(DESTROY_TIMEOUT_MS) });
        destroyed.push(w.id);
        this.#o.metrics.idleDestroyed.inc();
        this.#log.info(
          { id: w.id, owner: w.ownerId, function: w.functionName, idleSeconds: nowSeconds - w.lastUsedAt },
          'destroyed an idle worker',
        );
      } catch (err) {
        this.#log.error({ id: w.id, err: errorText(err) }, 'could not destroy an idle worker; retried at the next sweep');
      }
    }
    return destroyed;
  }

  /** Stops sweeping and waits for a sweep in progress. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running.catch(() => undefined);
  }
}

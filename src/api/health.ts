/**
 * gRPC health (`grpc.health.v1.Health`, via grpc-health-check) driven by the runtime backend:
 * SERVING only while `runtime.ping()` answers, NOT_SERVING from the start of shutdown on
 * (docs/contract.md#health; the reference agent reported SERVING forever under the wrong name: docs/go-agent.md#w8).
 */
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import type { Logger } from '../log.js';
import type { Runtime } from '../runtime/runtime.js';

/** The fully-qualified service name clients check (besides '' for the whole server). */
export const AGENT_SERVICE_NAME = 'esb.agent.v1.AgentService';

/** How often the backend is pinged. Short enough for a load balancer's usual 5–10 s checks. */
export const HEALTH_POLL_MS = 2000;

/** Bound on one ping; a backend slower than this counts as down. */
export const HEALTH_PING_TIMEOUT_MS = 2000;

export interface HealthMonitorOptions {
  readonly runtime: Pick<Runtime, 'ping'>;
  readonly log: Logger;
  readonly pollMs?: number;
  readonly pingTimeoutMs?: number;
}

/** Owns the health service's status for '' and AGENT_SERVICE_NAME. */
export class HealthMonitor {
  /** Add to the gRPC server with `implementation.addToServer(server)`. */
  readonly implementation: HealthImplementation;
  readonly #runtime: Pick<Runtime, 'ping'>;
  readonly #log: Logger;
  readonly #pollMs: number;
  readonly #pingTimeoutMs: number;
  #serving = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #pending: Promise<boolean> | undefined;

  constructor({ runtime, log, pollMs = HEALTH_POLL_MS, pingTimeoutMs = HEALTH_PING_TIMEOUT_MS }: HealthMonitorOptions) {
    this.#runtime = runtime;
    this.#log = log;
    this.#pollMs = pollMs;
    this.#pingTimeoutMs = pingTimeoutMs;
    // NOT_SERVING until the first ping succeeds: a client must not route to us before that.
    this.implementation = new HealthImplementation({ '': 'NOT_SERVING', [AGENT_SERVICE_NAME]: 'NOT_SERVING' });
  }

  /** The status last published. */
  get serving(): boolean {
    return this.#serving;
  }

  /**
   * Pings the backend now and publishes the result. Concurrent callers share one ping. After
   * `stop()` it answers false and changes nothing.
   */
  check(): Promise<boolean> {
    if (this.#stopped) return Promise.resolve(false);
    this.#pending ??= this.#ping().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  /** Starts polling every `pollMs`. The timer does not keep the process alive. */
  start(): void {
    if (this.#stopped || this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      void this.check();
    }, this.#pollMs);
    this.#timer.unref();
  }

  /** Stops polling and publishes NOT_SERVING for good (shutdown). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#publish(false, 'shutting down');
  }

  async #ping(): Promise<boolean> {
    let ok: boolean;
    try {
      ok = await this.#runtime.ping({ signal: AbortSignal.timeout(this.#pingTimeoutMs) });
    } catch (err) {
      // ping() should answer false rather than throw; treat a throw the same way.
      this.#log.debug({ err }, 'runtime ping threw');
      ok = false;
    }
    // A ping that was in flight when shutdown began must not flip us back to SERVING.
    if (!this.#stopped) this.#publish(ok, ok ? 'runtime backend answers' : 'runtime backend does not answer');
    return ok && !this.#stopped;
  }

  #publish(serving: boolean, reason: string): void {
    // setStatus notifies every Watch stream on each call, so only changes are published.
    if (serving === this.#serving) return;
    const status: ServingStatus = serving ? 'SERVING' : 'NOT_SERVING';
    this.implementation.setStatus('', status);
    this.implementation.setStatus(AGENT_SERVICE_NAME, status);
    this.#serving = serving;
    if (serving) this.#log.info({ health: status, reason }, 'health changed');
    else this.#log.warn({ health: status, reason }, 'health changed');
  }
}

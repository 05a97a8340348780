/**
 * What every runtime does the same way around its worker table: the read side (get, list,
 * touch, answered from memory: no backend call per request, docs/go-agent.md#w17) and destroying every worker
 * at shutdown. Runtimes extend it and implement the backend-specific rest of `Runtime`.
 */
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { WORKER_PORT, type CallOptions, type WorkerState } from './runtime.js';
import type { UndoStack } from './undo.js';
import { Admission, type AdmissionLimits, type Reservation } from './admission.js';
import { gaugedWorkerTable, nowSeconds, type WorkerTable } from './workers.js';

/** Each destroy of destroyAll runs on its own clock, like a single DestroyContainer. */
const DESTROY_ALL_EACH_MS = 60_000;

export abstract class TableBackedRuntime {
  readonly workers: WorkerTable;
  readonly #log: Logger;
  readonly #admission: Admission;

  protected constructor(deps: { readonly log: Logger; readonly metrics: AgentMetrics; readonly limits: AdmissionLimits }) {
    this.workers = gaugedWorkerTable(deps.metrics);
    this.#log = deps.log;
    this.#admission = new Admission(
      deps.limits,
      () => this.workers.list(),
      (limit) => {
        deps.metrics.admissionRefused.inc({ limit });
      },
    );
  }

  /**
   * Reserves room for a new worker under AGENT_MAX_WORKERS / AGENT_MAX_TOTAL_MEMORY_MB, or
   * throws RESOURCE_EXHAUSTED. Call before making anything; release in the Ensure's finally.
   */
  protected admit(memoryMb: number): Reservation {
    return this.#admission.reserve(memoryMb);
  }

  abstract destroy(id: string, opts: CallOptions): Promise<void>;

  get(id: string): WorkerState | undefined {
    return this.workers.get(id);
  }

  list(): WorkerState[] {
    return this.workers.list();
  }

  touch(id: string): void {
    this.workers.touch(id);
  }

  onWorkerRemoved(fn: (id: string) => void): void {
    this.workers.onRemoved(fn);
  }

  /**
   * Puts a worker that EnsureContainer is making into the table (status UNKNOWN until the
   * backend reports it), hands its admission over from `reservation` to the table, and
   * registers its removal on the Ensure's undo stack.
   */
  protected trackNewWorker(
    undo: UndoStack,
    w: Pick<WorkerState, 'id' | 'functionName' | 'ownerId' | 'createdAt' | 'ipAddress' | 'memoryMb'>,
    reservation: Reservation,
  ): void {
    this.workers.put({
      ...w,
      name: w.id,
      status: 'UNKNOWN',
      lastUsedAt: w.createdAt,
      port: WORKER_PORT,
      exitCode: 0,
      exitTime: 0,
      oomKills: 0,
    });
    // From here the table counts the worker: the Ensure's own reservation would count it twice.
    reservation.release();
    undo.push('forget worker', () => {
      this.workers.delete(w.id);
      return Promise.resolve();
    });
  }

  /** A worker's process ended (the backend's exit/die event). */
  protected recordExit(id: string, exitCode: number, exitTime: number): void {
    this.workers.update(id, { status: 'STOPPED', exitCode, exitTime: exitTime || nowSeconds() });
    this.#log.info({ id, exitCode }, 'worker exited');
  }

  /** The kernel's OOM killer hit the worker (the backend's OOM event); returns the new count. */
  protected recordOomKill(id: string): number {
    const count = (this.workers.get(id)?.oomKills ?? 0) + 1;
    this.workers.update(id, { oomKills: count });
    this.#log.warn({ id }, 'worker hit its memory limit (OOM kill)');
    return count;
  }

  /** Destroys every worker in parallel (AGENT_SHUTDOWN_POLICY=destroy); failures are logged. */
  async destroyAll(_opts: CallOptions): Promise<void> {
    const ids = this.workers.list().map((w) => w.id);
    const results = await Promise.allSettled(ids.map((id) => this.destroy(id, { signal: AbortSignal.timeout(DESTROY_ALL_EACH_MS) })));
    const failed = results.filter((r) => r.status === 'rejected').length;
    this.#log.info({ destroyed: ids.length - failed, failed }, 'destroyed all workers');
  }
}

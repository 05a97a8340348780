/**
 * What every runtime does the same way around its worker table: the read side (get, list,
 * touch, answered from memory: no backend call per request, W17) and destroying every worker
 * at shutdown. Runtimes extend it and implement the backend-specific rest of `Runtime`.
 */
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { WORKER_PORT, type CallOptions, type WorkerState } from './runtime.js';
import type { UndoStack } from './undo.js';
import { gaugedWorkerTable, nowSeconds, type WorkerTable } from './workers.js';

/** Each destroy of destroyAll runs on its own clock, like a single DestroyContainer. */
const DESTROY_ALL_EACH_MS = 60_000;

export abstract class TableBackedRuntime {
  readonly workers: WorkerTable;
  readonly #log: Logger;

  protected constructor(deps: { readonly log: Logger; readonly metrics: AgentMetrics }) {
    this.workers = gaugedWorkerTable(deps.metrics);
    this.#log = deps.log;
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

  /**
   * Puts a worker that EnsureContainer is making into the table (status UNKNOWN until the
   * backend reports it) and registers its removal on the Ensure's undo stack.
   */
  protected trackNewWorker(
    undo: UndoStack,
    w: Pick<WorkerState, 'id' | 'functionName' | 'ownerId' | 'createdAt' | 'ipAddress'>,
  ): void {
    this.workers.put({ ...w, name: w.id, status: 'UNKNOWN', lastUsedAt: w.createdAt, port: WORKER_PORT, exitCode: 0, exitTime: 0, oomKills: 0 });
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

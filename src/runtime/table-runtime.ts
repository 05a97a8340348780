/**
 * What every runtime does the same way around its worker table: the read side (get, list,
 * touch, answered from memory: no backend call per request, W17) and destroying every worker
 * at shutdown. Runtimes extend it and implement the backend-specific rest of `Runtime`.
 */
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { CallOptions, WorkerState } from './runtime.js';
import { gaugedWorkerTable, type WorkerTable } from './workers.js';

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

  /** Destroys every worker in parallel (AGENT_SHUTDOWN_POLICY=destroy); failures are logged. */
  async destroyAll(_opts: CallOptions): Promise<void> {
    const ids = this.workers.list().map((w) => w.id);
    const results = await Promise.allSettled(ids.map((id) => this.destroy(id, { signal: AbortSignal.timeout(DESTROY_ALL_EACH_MS) })));
    const failed = results.filter((r) => r.status === 'rejected').length;
    this.#log.info({ destroyed: ids.length - failed, failed }, 'destroyed all workers');
  }
}

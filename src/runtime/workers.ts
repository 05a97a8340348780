/**
 * The live worker table: every managed worker with what RPCs need (owner, function, IP, status,
 * times), rebuilt from runtime labels at start-up and kept current by the runtime's events.
 * ListContainers and the ownership checks read it; no runtime call per request (docs/go-agent.md#w17).
 */
import type { AgentMetrics } from '../metrics.js';
import type { WorkerState, WorkerStatus } from './runtime.js';

export type WorkerRecord = WorkerState;

/** Unix time in whole seconds, the unit of every time in the worker table and the API. */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

export class WorkerTable {
  readonly #workers = new Map<string, WorkerRecord>();
  readonly #onChange: (() => void) | undefined;
  readonly #removedListeners: ((id: string) => void)[] = [];

  constructor(onChange?: () => void) {
    this.#onChange = onChange;
  }

  get(id: string): WorkerRecord | undefined {
    return this.#workers.get(id);
  }

  list(): WorkerRecord[] {
    return [...this.#workers.values()];
  }

  get size(): number {
    return this.#workers.size;
  }

  /** Adds or replaces a worker. */
  put(w: WorkerRecord): void {
    this.#workers.set(w.id, w);
    this.#onChange?.();
  }

  /** Changes some fields of a known worker; unknown ids are ignored. */
  update(id: string, patch: Partial<Omit<WorkerRecord, 'id'>>): WorkerRecord | undefined {
    const w = this.#workers.get(id);
    if (!w) return undefined;
    const next = { ...w, ...patch };
    this.#workers.set(id, next);
    if (patch.status !== undefined && patch.status !== w.status) this.#onChange?.();
    return next;
  }

  setStatus(id: string, status: WorkerStatus): void {
    this.update(id, { status });
  }

  touch(id: string, at: number = nowSeconds()): void {
    const w = this.#workers.get(id);
    if (w && at > w.lastUsedAt) this.#workers.set(id, { ...w, lastUsedAt: at });
  }

  delete(id: string): boolean {
    const had = this.#workers.delete(id);
    if (had) {
      this.#onChange?.();
      for (const fn of this.#removedListeners) fn(id);
    }
    return had;
  }

  /**
   * Calls `fn` with the id of every worker that leaves the table, whatever removed it
   * (DestroyContainer, the idle sweep, reconciliation, a resync after the backend lost it), so
   * that per-worker state elsewhere (the invoke proxy's connection) can never outlive it.
   */
  onRemoved(fn: (id: string) => void): void {
    this.#removedListeners.push(fn);
  }

  /** Count of workers per status (for the esb_agent_workers gauge). */
  countByStatus(): Record<WorkerStatus, number> {
    const counts: Record<WorkerStatus, number> = { RUNNING: 0, PAUSED: 0, STOPPED: 0, UNKNOWN: 0 };
    for (const w of this.#workers.values()) counts[w.status]++;
    return counts;
  }
}

/** A worker table that keeps the esb_agent_workers{state} gauge current. */
export function gaugedWorkerTable(metrics: AgentMetrics): WorkerTable {
  const table: WorkerTable = new WorkerTable(() => {
    for (const [state, n] of Object.entries(table.countByStatus())) metrics.workers.set({ state }, n);
  });
  return table;
}

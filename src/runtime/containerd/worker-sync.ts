/**
 * Keeps the worker table in step with containerd: applies task events (start, exit, OOM,
 * pause, resume, delete) as they come, and rebuilds the table from Containers.List and
 * Tasks.List after every event-stream subscription, because events are live only and an
 * outage loses them (docs/containerd.md#events). After an outage it also asks for a
 * reconciliation pass: an Ensure or Destroy cut off by it could not finish its rollback.
 */
import type { Logger } from '../../log.js';
import { LABELS, isManaged, managedFilter } from '../../worker/naming.js';
import { WORKER_PORT, type WorkerState, type WorkerStatus } from '../runtime.js';
import type { WorkerTable } from '../workers.js';
import type { ContainerdClient } from './client.js';
import { listContainers, setContainerLabel, timestampSeconds, type ContainerRecord } from './containers.js';
import { EventWatcher, type TaskEvent } from './events.js';
import { listTasks, type TaskProcess } from './tasks.js';

/** A task's state as a worker status (no task = STOPPED). */
export function statusOf(p: TaskProcess | undefined): WorkerStatus {
  switch (p?.status) {
    case undefined:
    case 'STOPPED':
      return 'STOPPED';
    case 'RUNNING':
      return 'RUNNING';
    case 'PAUSED':
    case 'PAUSING':
      return 'PAUSED';
    default:
      return 'UNKNOWN';
  }
}

export interface WorkerSyncDeps {
  readonly client: ContainerdClient;
  /** The ENV label value this agent manages. */
  readonly env: string;
  readonly log: Logger;
  readonly workers: WorkerTable;
  /** True for ids being destroyed: their events no longer resurrect them. */
  readonly destroying: (id: string) => boolean;
  /** A worker's init process exited. */
  readonly recordExit: (id: string, exitCode: number, exitTime: number) => void;
  /** The OOM killer hit a worker; returns its new count. */
  readonly recordOomKill: (id: string) => number;
  /** last_used_at times saved by the previous run (read at start). */
  readonly savedLastUsed: () => ReadonlyMap<string, number>;
  /** Removes what an outage left half-made. */
  readonly reconcile: () => Promise<unknown>;
}

export class WorkerSync {
  readonly #d: WorkerSyncDeps;
  readonly #events: EventWatcher;
  /** Event-stream (re)subscriptions so far: every one after the first follows an outage. */
  #subscriptions = 0;

  constructor(d: WorkerSyncDeps) {
    this.#d = d;
    this.#events = new EventWatcher({
      client: d.client,
      log: d.log,
      onEvent: (e) => {
        this.#onTaskEvent(e);
      },
      onResync: () => this.#onSubscribed(),
    });
  }

  /** Subscribes to task events; resolves once the first subscription has built the table. */
  start(): Promise<void> {
    return this.#events.start();
  }

  close(): void {
    this.#events.close();
  }

  /**
   * Called after every event-stream subscription. The first builds the worker table; later
   * ones follow a containerd outage: rebuild the table, then clean up what the outage left.
   */
  async #onSubscribed(): Promise<void> {
    const first = this.#subscriptions++ === 0;
    await this.#resync();
    if (first) return;
    this.#d.log.info({ workers: this.#d.workers.size }, 'containerd is back; worker table resynced');
    await this.#d.reconcile();
  }

  /** Rebuilds the worker table from containerd: managed containers + their tasks. */
  async #resync(): Promise<void> {
    const { client: c, env, workers } = this.#d;
    const [containers, tasks] = await Promise.all([listContainers(c, managedFilter(env), {}), listTasks(c, {})]);
    const taskById = new Map(tasks.map((t) => [t.id, t]));
    const seen = new Set<string>();
    for (const rec of containers) {
      if (!isManaged(rec.labels, env)) continue;
      const w = this.#fromRecord(rec, taskById.get(rec.id));
      if (!w) continue;
      seen.add(w.id);
      workers.put(w);
    }
    for (const w of workers.list()) {
      // Keep workers being created right now (their container may not be listed yet).
      if (!seen.has(w.id) && w.status !== 'UNKNOWN') workers.delete(w.id);
    }
  }

  #fromRecord(rec: ContainerRecord, task: TaskProcess | undefined): WorkerState | undefined {
    const l = rec.labels;
    const functionName = l[LABELS.function];
    const ownerId = l[LABELS.owner];
    if (functionName === undefined || ownerId === undefined) {
      this.#d.log.warn({ id: rec.id }, 'managed container without function/owner labels; not listed');
      return undefined;
    }
    const prev = this.#d.workers.get(rec.id);
    const createdAt = Number(l[LABELS.createdAt]) || timestampSeconds(rec.created_at);
    return {
      id: rec.id,
      name: rec.id,
      functionName,
      ownerId,
      status: statusOf(task),
      createdAt,
      lastUsedAt: Math.max(prev?.lastUsedAt ?? 0, this.#d.savedLastUsed().get(rec.id) ?? 0, createdAt),
      // An Ensure in progress sets the IP label last; its table entry already has the IP.
      ipAddress: (l[LABELS.ip] ?? '') !== '' ? (l[LABELS.ip] ?? '') : (prev?.ipAddress ?? ''),
      port: WORKER_PORT,
      exitCode: task?.status === 'STOPPED' ? task.exit_status : (prev?.exitCode ?? 0),
      exitTime: task?.status === 'STOPPED' ? timestampSeconds(task.exited_at) : (prev?.exitTime ?? 0),
      oomKills: Math.max(prev?.oomKills ?? 0, Number(l[LABELS.oomKills]) || 0),
      memoryMb: Number(l[LABELS.memoryMb]) || (prev?.memoryMb ?? 0),
    };
  }

  #onTaskEvent(e: TaskEvent): void {
    const { workers } = this.#d;
    if (this.#d.destroying(e.containerId) || !workers.get(e.containerId)) return;
    switch (e.kind) {
      case 'start':
        workers.update(e.containerId, { status: 'RUNNING' });
        break;
      case 'exit':
        // Only the init process's exit (exec id = container id or empty) stops the worker.
        if (e.execId === '' || e.execId === e.containerId) {
          this.#d.recordExit(e.containerId, e.exitStatus, e.exitedAt);
        }
        break;
      case 'oom': {
        const count = this.#d.recordOomKill(e.containerId);
        // Kept in a label too: the count must survive an agent restart (docs/state-and-labels.md#restart-survival), and on
        // cgroup v2 the cgroup holding the kernel's counter may be gone by then.
        setContainerLabel(this.#d.client, e.containerId, LABELS.oomKills, String(count), {}).catch((err: unknown) => {
          this.#d.log.warn({ err, id: e.containerId }, 'could not record the OOM kill in a label');
        });
        break;
      }
      case 'paused':
        workers.update(e.containerId, { status: 'PAUSED' });
        break;
      case 'resumed':
        workers.update(e.containerId, { status: 'RUNNING' });
        break;
      case 'delete':
        workers.update(e.containerId, { status: 'STOPPED' });
        break;
    }
  }
}

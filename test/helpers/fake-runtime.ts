/**
 * An in-memory Runtime for API tests: a worker table the test fills, a record of calls, and
 * overridable behaviour per method. By default every mutating call succeeds at once.
 */
import type { CallOptions, EnsureRequest, Runtime, WorkerInfo, WorkerMetrics, WorkerState } from '../../src/runtime/runtime.js';

/** A worker with sensible defaults. */
export function fakeWorker(fields: Partial<WorkerState> & { id: string }): WorkerState {
  return {
    name: fields.id,
    functionName: 'fn',
    ownerId: 'owner-a',
    status: 'RUNNING',
    createdAt: 1_700_000_000,
    lastUsedAt: 1_700_000_100,
    ipAddress: '10.88.0.2',
    port: 8080,
    exitCode: 0,
    exitTime: 0,
    oomKills: 0,
    memoryMb: 128,
    ...fields,
  };
}

export interface FakeCall {
  readonly method: string;
  readonly id?: string;
  readonly req?: EnsureRequest;
  readonly signal?: AbortSignal;
}

type Override<F> = F | undefined;

export class FakeRuntime implements Runtime {
  readonly kind = 'containerd' as const;
  canPause = true;
  readonly workers = new Map<string, WorkerState>();
  readonly calls: FakeCall[] = [];
  readonly touched: string[] = [];
  /** What ping() answers. */
  pingOk = true;
  started = false;
  closed = false;
  onEnsure: Override<(req: EnsureRequest, opts: CallOptions) => Promise<WorkerInfo>>;
  onDestroy: Override<(id: string, opts: CallOptions) => Promise<void>>;
  onPause: Override<(id: string, opts: CallOptions) => Promise<void>>;
  onResume: Override<(id: string, opts: CallOptions) => Promise<void>>;
  onMetrics: Override<(id: string, opts: CallOptions) => Promise<WorkerMetrics>>;
  onDestroyAll: Override<(opts: CallOptions) => Promise<void>>;

  add(...workers: WorkerState[]): this {
    for (const w of workers) this.workers.set(w.id, w);
    return this;
  }

  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }

  ensure(req: EnsureRequest, opts: CallOptions): Promise<WorkerInfo> {
    this.calls.push({ method: 'ensure', req, signal: opts.signal });
    if (this.onEnsure) return this.onEnsure(req, opts);
    const id = `esb-default-fn-${this.workers.size.toString(16).padStart(8, '0')}`;
    this.add(fakeWorker({ id, functionName: req.functionName, ownerId: req.ownerId }));
    return Promise.resolve({ id, name: id, ipAddress: '10.88.0.2', port: 8080 });
  }

  destroy(id: string, opts: CallOptions): Promise<void> {
    this.calls.push({ method: 'destroy', id, signal: opts.signal });
    if (this.onDestroy) return this.onDestroy(id, opts);
    this.remove(id);
    return Promise.resolve();
  }

  readonly #removedListeners: ((id: string) => void)[] = [];

  /** Drops a worker as any removal path would, telling onWorkerRemoved listeners. */
  remove(id: string): void {
    if (this.workers.delete(id)) for (const fn of this.#removedListeners) fn(id);
  }

  onWorkerRemoved(fn: (id: string) => void): void {
    this.#removedListeners.push(fn);
  }

  pause(id: string, opts: CallOptions): Promise<void> {
    this.calls.push({ method: 'pause', id, signal: opts.signal });
    return this.onPause ? this.onPause(id, opts) : Promise.resolve();
  }

  resume(id: string, opts: CallOptions): Promise<void> {
    this.calls.push({ method: 'resume', id, signal: opts.signal });
    return this.onResume ? this.onResume(id, opts) : Promise.resolve();
  }

  get(id: string): WorkerState | undefined {
    return this.workers.get(id);
  }

  list(): WorkerState[] {
    return [...this.workers.values()];
  }

  metrics(id: string, opts: CallOptions): Promise<WorkerMetrics> {
    this.calls.push({ method: 'metrics', id, signal: opts.signal });
    if (this.onMetrics) return this.onMetrics(id, opts);
    return Promise.resolve({
      state: 'RUNNING',
      memoryCurrentBytes: 1024n,
      memoryMaxBytes: 128n * 1024n * 1024n,
      oomEvents: 0n,
      cpuUsageNs: 5n,
      exitCode: 0,
      exitTime: 0,
      collectedAt: 1_700_000_200,
    });
  }

  touch(id: string): void {
    this.touched.push(id);
  }

  ping(_opts: CallOptions): Promise<boolean> {
    return Promise.resolve(this.pingOk);
  }

  destroyAll(opts: CallOptions): Promise<void> {
    this.calls.push({ method: 'destroyAll', signal: opts.signal });
    if (this.onDestroyAll) return this.onDestroyAll(opts);
    this.workers.clear();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

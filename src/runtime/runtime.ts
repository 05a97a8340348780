/**
 * The `Runtime` interface: what the API layer needs from a container backend. Two
 * implementations: `runtime/containerd` (the product) and `runtime/docker` (fallback). Only
 * `main.ts` knows which one runs. Every method throws AgentError (src/errors.ts) only.
 */

/** Status strings of the contract (docs/contract.md#service). */
export type WorkerStatus = 'RUNNING' | 'PAUSED' | 'STOPPED' | 'UNKNOWN';

/** The port the Lambda RIE listens on inside every worker. */
export const WORKER_PORT = 8080;

export interface EnsureRequest {
  readonly functionName: string;
  /** As sent; blank means "resolve from CONTAINER_REGISTRY/safe(function_name):ESB_TAG". */
  readonly image: string;
  readonly env: Readonly<Record<string, string>>;
  readonly ownerId: string;
}

/** What EnsureContainer returns. `id` = `name` = the container id. */
export interface WorkerInfo {
  readonly id: string;
  readonly name: string;
  readonly ipAddress: string;
  readonly port: number;
}

/** One worker as the agent knows it (the live worker table). Times are Unix seconds. */
export interface WorkerState {
  readonly id: string;
  readonly name: string;
  readonly functionName: string;
  readonly ownerId: string;
  readonly status: WorkerStatus;
  readonly createdAt: number;
  readonly lastUsedAt: number;
  readonly ipAddress: string;
  readonly port: number;
  /** Exit status and time (Unix seconds) once STOPPED; 0 otherwise. */
  readonly exitCode: number;
  readonly exitTime: number;
  /** OOM kills seen for this worker (from runtime events). */
  readonly oomKills: number;
  /** The worker's memory limit in MiB (its label), for host-wide admission. */
  readonly memoryMb: number;
}

/** GetContainerMetrics, one definition for every runtime and cgroup version (docs/contract.md#getcontainermetrics). */
export interface WorkerMetrics {
  readonly state: WorkerStatus;
  /** Working set: usage minus inactive file cache, bytes. */
  readonly memoryCurrentBytes: bigint;
  /** Limit in bytes; 0 = unlimited. */
  readonly memoryMaxBytes: bigint;
  readonly oomEvents: bigint;
  readonly cpuUsageNs: bigint;
  readonly exitCode: number;
  /** Unix seconds; 0 = not exited. */
  readonly exitTime: number;
  /** Unix seconds. */
  readonly collectedAt: number;
}

/** Per-call options. The signal fires on client cancel or deadline. */
export interface CallOptions {
  readonly signal: AbortSignal;
}

export interface Runtime {
  readonly kind: 'containerd' | 'docker';
  /**
   * False when the backend cannot freeze workers (docker): Pause/Resume then answer
   * UNIMPLEMENTED whatever the arguments (docs/contract.md#pausecontainer), before validation or ownership checks.
   */
  readonly canPause: boolean;
  /** Connects, prepares the backend and rebuilds the worker table. Throws when unreachable. */
  start(): Promise<void>;
  /** Creates and starts a new worker; on any failure nothing is left behind. */
  ensure(req: EnsureRequest, opts: CallOptions): Promise<WorkerInfo>;
  /** Removes a worker and everything it holds. An unknown id is success. */
  destroy(id: string, opts: CallOptions): Promise<void>;
  /** Freezes a worker. Idempotent; STOPPED → FAILED_PRECONDITION. */
  pause(id: string, opts: CallOptions): Promise<void>;
  /** Thaws a worker. Idempotent; STOPPED → FAILED_PRECONDITION. */
  resume(id: string, opts: CallOptions): Promise<void>;
  /** The worker with this id, if this agent manages it. */
  get(id: string): WorkerState | undefined;
  /** Every managed worker (all owners). */
  list(): WorkerState[];
  metrics(id: string, opts: CallOptions): Promise<WorkerMetrics>;
  /** Marks a worker used now (InvokeWorker). */
  touch(id: string): void;
  /** True while the backend answers (drives gRPC health). */
  ping(opts: CallOptions): Promise<boolean>;
  /** Destroys every managed worker (AGENT_SHUTDOWN_POLICY=destroy). */
  destroyAll(opts: CallOptions): Promise<void>;
  /** Registers `fn` to be told the id of every worker that is gone from this runtime, by any path. */
  onWorkerRemoved(fn: (id: string) => void): void;
  /** Releases connections; leaves workers running. */
  close(): Promise<void>;
}

/**
 * The AgentService RPCs, one async function each: validate the request, check that the caller
 * owns the container, make one call to the Runtime (or the Invoker), build the reply. Nothing
 * here knows containerd, CNI or HTTP; every failure is an AgentError that `status.ts` maps.
 */
import { AgentError } from '../errors.js';
import type { CallOptions, Runtime, WorkerMetrics, WorkerState } from '../runtime/runtime.js';
import type { ContainerMetrics } from '../gen/agent/esb/agent/v1/ContainerMetrics.js';
import type { ContainerState } from '../gen/agent/esb/agent/v1/ContainerState.js';
import type { DestroyContainerRequest__Output } from '../gen/agent/esb/agent/v1/DestroyContainerRequest.js';
import type { DestroyContainerResponse } from '../gen/agent/esb/agent/v1/DestroyContainerResponse.js';
import type { EnsureContainerRequest__Output } from '../gen/agent/esb/agent/v1/EnsureContainerRequest.js';
import type { GetContainerMetricsRequest__Output } from '../gen/agent/esb/agent/v1/GetContainerMetricsRequest.js';
import type { GetContainerMetricsResponse } from '../gen/agent/esb/agent/v1/GetContainerMetricsResponse.js';
import type { InvokeWorkerRequest__Output } from '../gen/agent/esb/agent/v1/InvokeWorkerRequest.js';
import type { InvokeWorkerResponse } from '../gen/agent/esb/agent/v1/InvokeWorkerResponse.js';
import type { ListContainersRequest__Output } from '../gen/agent/esb/agent/v1/ListContainersRequest.js';
import type { ListContainersResponse } from '../gen/agent/esb/agent/v1/ListContainersResponse.js';
import type { PauseContainerRequest__Output } from '../gen/agent/esb/agent/v1/PauseContainerRequest.js';
import type { PauseContainerResponse } from '../gen/agent/esb/agent/v1/PauseContainerResponse.js';
import type { ResumeContainerRequest__Output } from '../gen/agent/esb/agent/v1/ResumeContainerRequest.js';
import type { ResumeContainerResponse } from '../gen/agent/esb/agent/v1/ResumeContainerResponse.js';
import type { WorkerInfo as WorkerInfoMessage } from '../gen/agent/esb/agent/v1/WorkerInfo.js';
import type { InvokeRequest, InvokeResponse, InvokeTarget } from '../proxy/types.js';
import type { RpcContext } from './status.js';
import { validateContainerRef, validateDestroy, validateEnsure, validateInvoke, validateOwner } from './validate.js';

export type { InvokeRequest, InvokeResponse, InvokeTarget } from '../proxy/types.js';

/**
 * Sends one request to a worker (implemented in src/proxy/invoke.ts). Throws AgentError:
 * DEADLINE_EXCEEDED when `timeoutMs` passes, CANCELLED when `signal` fires on a client cancel,
 * RESOURCE_EXHAUSTED for a body over the cap; never retries once the request may have reached
 * the worker.
 */
export interface Invoker {
  invoke(target: InvokeTarget, req: InvokeRequest, opts: CallOptions): Promise<InvokeResponse>;
  /** Drops the worker's keep-alive connection once it is destroyed (docs/go-agent.md#w9). */
  closeWorker?(id: string): Promise<void>;
  /** Closes every connection at shutdown. */
  close?(): Promise<void>;
}

export interface AgentServiceDeps {
  readonly runtime: Runtime;
  /** Absent until the proxy lands: InvokeWorker then answers UNIMPLEMENTED. */
  readonly invoker?: Invoker | undefined;
  /** AGENT_INVOKE_DEFAULT_TIMEOUT_MS, used when a request's timeout_ms is ≤ 0. */
  readonly invokeDefaultTimeoutMs: number;
}

/** The seven RPCs of `esb.agent.v1.AgentService`, wire objects in and out. */
export interface AgentRpcs {
  readonly ensureContainer: (req: EnsureContainerRequest__Output, ctx: RpcContext) => Promise<WorkerInfoMessage>;
  readonly destroyContainer: (req: DestroyContainerRequest__Output, ctx: RpcContext) => Promise<DestroyContainerResponse>;
  readonly pauseContainer: (req: PauseContainerRequest__Output, ctx: RpcContext) => Promise<PauseContainerResponse>;
  readonly resumeContainer: (req: ResumeContainerRequest__Output, ctx: RpcContext) => Promise<ResumeContainerResponse>;
  readonly listContainers: (req: ListContainersRequest__Output, ctx: RpcContext) => Promise<ListContainersResponse>;
  readonly getContainerMetrics: (req: GetContainerMetricsRequest__Output, ctx: RpcContext) => Promise<GetContainerMetricsResponse>;
  readonly invokeWorker: (req: InvokeWorkerRequest__Output, ctx: RpcContext) => Promise<InvokeWorkerResponse>;
}

/**
 * The worker `id` if it belongs to `ownerId`. Unknown → NOT_FOUND; another owner's →
 * PERMISSION_DENIED whose message says nothing about the container (docs/contract.md#ownership).
 */
export function ownedWorker(runtime: Runtime, id: string, ownerId: string): WorkerState {
  const worker = runtime.get(id);
  if (worker === undefined) {
    throw new AgentError('NOT_FOUND', `container ${id} not found: it was destroyed or never existed; ensure a new one`);
  }
  if (worker.ownerId !== ownerId) throw permissionDenied(id, ownerId);
  return worker;
}

/** The owner-mismatch error; it names only what the caller sent. */
function permissionDenied(id: string, ownerId: string): AgentError {
  return new AgentError('PERMISSION_DENIED', `owner ${ownerId} may not use container ${id}`);
}

/** A Unix-seconds time as the int64 decimal string of the wire; 0 for anything unusable. */
function unixSeconds(t: number): string {
  return Number.isFinite(t) && t > 0 ? String(Math.trunc(t)) : '0';
}

/** A uint32 field; out-of-range values become 0 rather than wrapping. */
function uint32(n: number): number {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff ? n : 0;
}

/** A uint64 counter as its decimal string (lossless for 2^64−1; docs/design.md#grpc-js). */
function uint64(n: bigint): string {
  return n > 0n ? n.toString() : '0';
}

/**
 * One worker as ListContainers reports it. Total: it never throws, so one odd worker cannot
 * fail the whole List (the gateway skips its cleanup on a List error: docs/contract.md#gateway).
 */
export function toContainerState(w: WorkerState): ContainerState {
  return {
    container_id: w.id,
    function_name: w.functionName,
    status: w.status,
    last_used_at: unixSeconds(w.lastUsedAt),
    container_name: w.name,
    created_at: unixSeconds(w.createdAt),
    owner_id: w.ownerId,
  };
}

/** WorkerMetrics → the wire's ContainerMetrics; 64-bit counters as decimal strings. */
export function toContainerMetrics(w: WorkerState, m: WorkerMetrics): ContainerMetrics {
  return {
    container_id: w.id,
    function_name: w.functionName,
    container_name: w.name,
    state: m.state,
    memory_current: uint64(m.memoryCurrentBytes),
    memory_max: uint64(m.memoryMaxBytes),
    oom_events: uint64(m.oomEvents),
    cpu_usage_ns: uint64(m.cpuUsageNs),
    exit_code: uint32(m.exitCode),
    // The agent never restarts a worker (docs/contract.md#getcontainermetrics).
    restart_count: 0,
    exit_time: unixSeconds(m.exitTime),
    collected_at: unixSeconds(m.collectedAt),
  };
}

/** Builds the RPC functions over a runtime and (optionally) an invoker. */
export function createAgentService({ runtime, invoker, invokeDefaultTimeoutMs }: AgentServiceDeps): AgentRpcs {
  return {
    async ensureContainer(req, ctx) {
      const ensure = validateEnsure(req);
      ctx.annotate({ functionName: ensure.functionName });
      const info = await runtime.ensure(ensure, { signal: ctx.signal });
      ctx.annotate({ containerId: info.id });
      return { id: info.id, name: info.name, ip_address: info.ipAddress, port: info.port };
    },

    async destroyContainer(req, ctx) {
      const { containerId, ownerId } = validateDestroy(req);
      const worker = runtime.get(containerId);
      // Idempotent: a worker that is already gone is what the caller wanted (docs/contract.md#destroycontainer).
      if (worker === undefined) return { success: true };
      if (worker.ownerId !== ownerId) throw permissionDenied(containerId, ownerId);
      await runtime.destroy(containerId, { signal: ctx.signal });
      // The worker's address may be reused by the next one: its connection must not be. The
      // worker is gone either way, so a failure here does not fail the Destroy.
      await invoker?.closeWorker?.(containerId).catch(() => undefined);
      return { success: true };
    },

    async pauseContainer(req, ctx) {
      if (!runtime.canPause) return runtime.pause(req.container_id, { signal: ctx.signal }).then(() => ({ success: true }));
      const { containerId, ownerId } = validateContainerRef(req);
      ownedWorker(runtime, containerId, ownerId);
      await runtime.pause(containerId, { signal: ctx.signal });
      return { success: true };
    },

    async resumeContainer(req, ctx) {
      if (!runtime.canPause) return runtime.resume(req.container_id, { signal: ctx.signal }).then(() => ({ success: true }));
      const { containerId, ownerId } = validateContainerRef(req);
      ownedWorker(runtime, containerId, ownerId);
      await runtime.resume(containerId, { signal: ctx.signal });
      return { success: true };
    },

    // async without an await: a validation throw must become a rejection like in the others.
    // eslint-disable-next-line @typescript-eslint/require-await
    async listContainers(req, ctx) {
      const ownerId = validateOwner(req.owner_id);
      const containers = runtime
        .list()
        .filter((w) => w.ownerId === ownerId)
        .map(toContainerState);
      ctx.annotate({ count: containers.length });
      return { containers };
    },

    async getContainerMetrics(req, ctx) {
      const { containerId, ownerId } = validateContainerRef(req);
      const worker = ownedWorker(runtime, containerId, ownerId);
      const metrics = await runtime.metrics(containerId, { signal: ctx.signal });
      return { metrics: toContainerMetrics(worker, metrics) };
    },

    async invokeWorker(req, ctx) {
      const input = validateInvoke(req, { defaultTimeoutMs: invokeDefaultTimeoutMs });
      if (invoker === undefined) throw new AgentError('UNIMPLEMENTED', 'InvokeWorker is not implemented yet');
      const worker = ownedWorker(runtime, input.containerId, input.ownerId);
      if (worker.status === 'PAUSED') {
        throw new AgentError('FAILED_PRECONDITION', `container ${worker.id} is paused; resume it before invoking`);
      }
      if (worker.status === 'STOPPED') {
        throw new AgentError(
          'FAILED_PRECONDITION',
          `container ${worker.id} has stopped (exit code ${worker.exitCode}); destroy it and ensure a new one`,
        );
      }
      if (worker.ipAddress === '') {
        throw new AgentError('FAILED_PRECONDITION', `container ${worker.id} has no network address yet; destroy it and ensure a new one`);
      }
      const res = await invoker.invoke(
        {
          id: worker.id,
          ipAddress: worker.ipAddress,
          port: worker.port,
          stoppedReason: () => {
            const now = runtime.get(worker.id);
            return now === undefined
              ? 'the worker was destroyed'
              : now.status === 'STOPPED'
                ? `the worker exited with code ${now.exitCode}`
                : undefined;
          },
        },
        { path: input.path, payload: input.payload, headers: input.headers, timeoutMs: input.timeoutMs },
        { signal: ctx.signal },
      );
      runtime.touch(worker.id);
      ctx.annotate({ statusCode: res.statusCode });
      return { status_code: res.statusCode, headers: { ...res.headers }, body: res.body };
    },
  };
}

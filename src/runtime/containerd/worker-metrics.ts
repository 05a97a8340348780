/**
 * GetContainerMetrics on containerd: the task's state from Tasks.Get, usage from the cgroup
 * sample of Tasks.Metrics, and OOM kills from whichever is higher of the cgroup's counter and
 * the OOM events seen (the cgroup of a stopped task may be gone).
 */
import { AgentError } from '../../errors.js';
import { decodeCgroupMetrics } from '../../cgroups/metrics.js';
import type { WorkerMetrics } from '../runtime.js';
import { nowSeconds, type WorkerTable } from '../workers.js';
import type { ContainerdClient } from './client.js';
import { timestampSeconds } from './containers.js';
import { getTask, taskMetrics, type TaskProcess } from './tasks.js';
import { statusOf } from './worker-sync.js';

export interface WorkerMetricsDeps {
  readonly client: ContainerdClient;
  readonly workers: WorkerTable;
}

export async function readWorkerMetrics(d: WorkerMetricsDeps, id: string, signal: AbortSignal): Promise<WorkerMetrics> {
  const c = d.client;
  const known = d.workers.get(id);
  const p = await getTask(c, id, { signal });
  const collectedAt = nowSeconds();
  const status = statusOf(p);
  const oomFromEvents = BigInt(known?.oomKills ?? 0);
  if (!p || status === 'STOPPED') return stoppedMetrics(d, id, p, oomFromEvents, collectedAt, signal);
  const data = await taskMetrics(c, id, { signal });
  if (!data) {
    // No sample: the shim could not read the task's cgroup because it is gone, which means
    // the task ended between Get and Metrics. Not UNIMPLEMENTED: the gateway reads that as
    // "this runtime has no metrics".
    const now = await getTask(c, id, { signal });
    if (!now || statusOf(now) === 'STOPPED') return stoppedMetrics(d, id, now, oomFromEvents, nowSeconds(), signal);
    throw new AgentError(
      'UNAVAILABLE',
      `metrics of worker ${id}: containerd returned no cgroup sample although the task is ${statusOf(now)}; retry`,
    );
  }
  const decoded = c.decodeAny(data);
  if (!decoded) {
    throw new AgentError('UNIMPLEMENTED', `metrics not implemented for payload type ${data.type_url} of worker ${id}`);
  }
  const cg = decodeCgroupMetrics(decoded.type, decoded.value);
  return {
    state: status,
    memoryCurrentBytes: cg.memoryCurrentBytes,
    memoryMaxBytes: cg.memoryMaxBytes,
    oomEvents: cg.oomKills > oomFromEvents ? cg.oomKills : oomFromEvents,
    cpuUsageNs: cg.cpuUsageNs,
    exitCode: 0,
    exitTime: 0,
    collectedAt,
  };
}

/** A stopped worker's metrics: no usage, its exit, and the OOM kills seen. */
async function stoppedMetrics(
  d: WorkerMetricsDeps,
  id: string,
  p: TaskProcess | undefined,
  oomFromEvents: bigint,
  collectedAt: number,
  signal: AbortSignal,
): Promise<WorkerMetrics> {
  const known = d.workers.get(id);
  return {
    state: 'STOPPED',
    memoryCurrentBytes: 0n,
    memoryMaxBytes: 0n,
    oomEvents: p ? await stoppedOomKills(d.client, id, oomFromEvents, signal) : oomFromEvents,
    cpuUsageNs: 0n,
    exitCode: p ? p.exit_status : (known?.exitCode ?? 0),
    exitTime: p ? timestampSeconds(p.exited_at) : (known?.exitTime ?? 0),
    collectedAt,
  };
}

/** The cgroup's OOM counter of a stopped, undeleted task (best effort), or `known`. */
async function stoppedOomKills(c: ContainerdClient, id: string, known: bigint, signal: AbortSignal): Promise<bigint> {
  try {
    const decoded = c.decodeAny(await taskMetrics(c, id, { signal }));
    if (!decoded) return known;
    const cg = decodeCgroupMetrics(decoded.type, decoded.value);
    return cg.oomKills > known ? cg.oomKills : known;
  } catch {
    return known;
  }
}

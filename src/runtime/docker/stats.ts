/**
 * Docker's container state and one-shot stats → the contract's status strings and
 * GetContainerMetrics numbers, with the same definition as on containerd (docs/contract.md#getcontainermetrics):
 *
 * | field | cgroup v1 (stats API) | cgroup v2 (stats API) |
 * |---|---|---|
 * | memory_current | `memory_stats.usage − stats.total_inactive_file` | `usage − stats.inactive_file` |
 * | memory_max | `memory_stats.limit` when a limit is set (HostConfig.Memory > 0), else 0 | same |
 * | oom_events | `State.OOMKilled` (0/1) or the OOM events seen, whichever is larger | same |
 * | cpu_usage_ns | `cpu_stats.cpu_usage.total_usage` (dockerd reports ns on both versions) | same |
 *
 * dockerd reports the host's memory as `limit` when there is none, hence HostConfig.Memory.
 * Pure functions: unit-tested with stats recorded from a real dockerd (test/fixtures/docker/).
 */
import type { WorkerMetrics, WorkerStatus } from '../runtime.js';

/** The parts of `GET /containers/{id}/stats?stream=false` this module reads. */
export interface DockerStats {
  readonly memory_stats?: {
    readonly usage?: number;
    readonly limit?: number;
    readonly stats?: Readonly<Record<string, number>>;
  };
  readonly cpu_stats?: { readonly cpu_usage?: { readonly total_usage?: number } };
}

/** The parts of `GET /containers/{id}/json` (inspect) this runtime reads. */
export interface DockerInspect {
  readonly Id: string;
  readonly Name: string;
  readonly State: {
    readonly Status: string;
    readonly Running: boolean;
    readonly Paused: boolean;
    readonly OOMKilled: boolean;
    readonly ExitCode: number;
    readonly StartedAt: string;
    readonly FinishedAt: string;
    readonly Error?: string;
  };
  readonly Config: { readonly Labels: Readonly<Record<string, string>> | null };
  readonly HostConfig: { readonly Memory: number };
  readonly NetworkSettings: { readonly Networks: Readonly<Record<string, { readonly IPAddress: string }>> | null };
}

/** Docker's `State.Status` (and `/containers/json` `State`) → the contract's status. */
export function statusFromDockerState(state: string): WorkerStatus {
  switch (state) {
    case 'running':
      return 'RUNNING';
    case 'paused':
      return 'PAUSED';
    case 'created':
    case 'exited':
    case 'dead':
    case 'removing':
      return 'STOPPED';
    default:
      // 'restarting' never happens (no restart policy is set); anything new is unknown.
      return 'UNKNOWN';
  }
}

/** A Docker RFC 3339 time in Unix seconds; Go's zero time (`0001-01-01T00:00:00Z`) and junk → 0. */
export function dockerTimeSeconds(iso: string | undefined): number {
  if (iso === undefined || iso.startsWith('0001-')) return 0;
  const ms = Date.parse(iso);
  return Number.isFinite(ms) && ms > 0 ? Math.floor(ms / 1000) : 0;
}

/** The exit code in a `/containers/json` Status text such as `Exited (137) 5 seconds ago`. */
export function exitCodeFromStatusText(status: string): number | undefined {
  const m = /^Exited \((-?\d+)\)/.exec(status);
  return m ? Number(m[1]) : undefined;
}

const big = (n: number | undefined): bigint => (typeof n === 'number' && Number.isFinite(n) && n > 0 ? BigInt(Math.trunc(n)) : 0n);

/** Working set: usage minus inactive file cache (v1 `total_inactive_file`, v2 `inactive_file`), never below 0. */
export function workingSetBytes(mem: DockerStats['memory_stats']): bigint {
  const usage = big(mem?.usage);
  const s = mem?.stats ?? {};
  const inactive = big(s['total_inactive_file'] ?? s['inactive_file']);
  return usage > inactive ? usage - inactive : 0n;
}

/** OOM kills: the larger of what events counted and inspect's sticky `OOMKilled` flag. */
export function oomKills(inspect: DockerInspect, seenByEvents: number): bigint {
  return BigInt(Math.max(seenByEvents, inspect.State.OOMKilled ? 1 : 0));
}

/** Metrics of a running or paused container from its one-shot stats. */
export function metricsFromStats(stats: DockerStats, inspect: DockerInspect, seenOomKills: number, collectedAt: number): WorkerMetrics {
  return {
    state: statusFromDockerState(inspect.State.Status),
    memoryCurrentBytes: workingSetBytes(stats.memory_stats),
    memoryMaxBytes: inspect.HostConfig.Memory > 0 ? big(stats.memory_stats?.limit ?? inspect.HostConfig.Memory) : 0n,
    oomEvents: oomKills(inspect, seenOomKills),
    cpuUsageNs: big(stats.cpu_stats?.cpu_usage?.total_usage),
    exitCode: 0,
    exitTime: 0,
    collectedAt,
  };
}

/** Metrics of a container that is not running: STOPPED, no usage, its exit status and OOM kills. */
export function stoppedMetrics(inspect: DockerInspect, seenOomKills: number, collectedAt: number): WorkerMetrics {
  return {
    state: 'STOPPED',
    memoryCurrentBytes: 0n,
    memoryMaxBytes: 0n,
    oomEvents: oomKills(inspect, seenOomKills),
    cpuUsageNs: 0n,
    exitCode: inspect.State.ExitCode,
    exitTime: dockerTimeSeconds(inspect.State.FinishedAt),
    collectedAt,
  };
}

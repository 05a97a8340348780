/**
 * Turns a task's cgroup statistics (containerd `Tasks.Metrics`, decoded from its Any) into the
 * four numbers GetContainerMetrics reports, with one definition on cgroup v1 and v2 (docs/contract.md#getcontainermetrics
 * table; fixes the reference agent's docs/go-agent.md#w20, where v1 reported RSS, v2 usage, and "unlimited" came
 * out as ~2^63 or 2^64).
 *
 * Input is the object protobufjs `toObject` gives with keepCase and `longs: String`: snake_case
 * keys, 64-bit integers as decimal strings, proto3 zero fields absent (docs/containerd.md#task-metrics).
 * Everything is BigInt: usage limits and CPU nanoseconds exceed 2^53.
 */
import { AgentError } from '../errors.js';

/** Any type name of containerd's cgroup v1 statistics (`cgroups/stats/v1/metrics.proto`). */
export const CGROUP_V1_METRICS_TYPE = 'io.containerd.cgroups.v1.Metrics';
/** Any type name of containerd's cgroup v2 statistics (`cgroups/v2/stats/metrics.proto`). */
export const CGROUP_V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';

/**
 * Limits at or above this many bytes mean "no limit". v1 reports PAGE_COUNTER_MAX pages in
 * bytes (9223372036854771712 with 4 KiB pages, 9223372036854710272 with 64 KiB pages); v2
 * reports `max` as 2^64−1. No real limit comes near 2^62 bytes (4 EiB).
 */
export const UNLIMITED_THRESHOLD_BYTES = 2n ** 62n;

const NS_PER_US = 1000n;

/** What GetContainerMetrics needs from one cgroup sample. */
export interface CgroupMetrics {
  /** Working set: usage minus inactive file cache (reclaimable), clamped at 0. */
  readonly memoryCurrentBytes: bigint;
  /** The memory limit; 0 when unlimited. */
  readonly memoryMaxBytes: bigint;
  /** OOM kills inside the cgroup since it was created. */
  readonly oomKills: bigint;
  /** CPU time used, nanoseconds. */
  readonly cpuUsageNs: bigint;
  /** Processes in the cgroup; absent when the sample has no pids statistics. */
  readonly pidsCurrent?: bigint;
}

type Obj = Readonly<Record<string, unknown>>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The sub-message at `path`, or undefined when absent (proto3: unset message fields). */
function message(root: Obj, path: readonly string[]): Obj | undefined {
  let cur: unknown = root;
  for (const key of path) {
    if (!isObj(cur)) return undefined;
    cur = cur[key];
  }
  return isObj(cur) ? cur : undefined;
}

/**
 * The uint64 at `path`; absent → 0 (proto3 omits zero fields). Accepts the decimal string of
 * `longs: String`, and a safe non-negative number or a bigint from other decoders.
 *
 * @throws AgentError INTERNAL when the value is not an unsigned integer.
 */
function u64(root: Obj, path: readonly string[]): bigint {
  const parent = message(root, path.slice(0, -1));
  const v = parent?.[path[path.length - 1]!];
  if (v === undefined || v === null) return 0n;
  if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v);
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'bigint' && v >= 0n) return v;
  throw new AgentError(
    'INTERNAL',
    `malformed cgroup metrics: ${path.join('.')} is ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)}, not an unsigned integer`,
  );
}

function workingSet(usage: bigint, inactiveFile: bigint): bigint {
  // The two counters are not read atomically; a sample may show more inactive cache than
  // usage. Clamp instead of wrapping below zero.
  return usage > inactiveFile ? usage - inactiveFile : 0n;
}

function limitOrZero(limit: bigint): bigint {
  return limit >= UNLIMITED_THRESHOLD_BYTES ? 0n : limit;
}

function pids(value: Obj): { pidsCurrent?: bigint } {
  // An absent `pids` message means the pids controller gave nothing; a present but empty one
  // is a real 0.
  return message(value, ['pids']) === undefined ? {} : { pidsCurrent: u64(value, ['pids', 'current']) };
}

function decodeV1(value: Obj): CgroupMetrics {
  return {
    // total_inactive_file, not inactive_file: the total_* counters are hierarchical (they
    // include child cgroups), like memory.usage_in_bytes; cAdvisor/kubelet use the same pair.
    memoryCurrentBytes: workingSet(u64(value, ['memory', 'usage', 'usage']), u64(value, ['memory', 'total_inactive_file'])),
    memoryMaxBytes: limitOrZero(u64(value, ['memory', 'usage', 'limit'])),
    oomKills: u64(value, ['memory_oom_control', 'oom_kill']),
    cpuUsageNs: u64(value, ['cpu', 'usage', 'total']),
    ...pids(value),
  };
}

function decodeV2(value: Obj): CgroupMetrics {
  return {
    memoryCurrentBytes: workingSet(u64(value, ['memory', 'usage']), u64(value, ['memory', 'inactive_file'])),
    memoryMaxBytes: limitOrZero(u64(value, ['memory', 'usage_limit'])),
    // oom_kill (processes killed), not oom (times the limit was hit): docs/contract.md#getcontainermetrics counts kills on
    // both versions, matching v1's memory.oom_control oom_kill.
    oomKills: u64(value, ['memory_events', 'oom_kill']),
    cpuUsageNs: u64(value, ['cpu', 'usage_usec']) * NS_PER_US,
    ...pids(value),
  };
}

/**
 * Decodes one cgroup metrics sample. `type` is the Any's type name (a `type.googleapis.com/`
 * style prefix is ignored); `value` the decoded message as described in the module comment.
 *
 * @throws AgentError UNIMPLEMENTED for any other type; the message contains
 *   `metrics not implemented` (the gateway answers 501 on that text, docs/contract.md#gateway) and the type.
 * @throws AgentError INTERNAL when a counter is not an unsigned integer.
 */
export function decodeCgroupMetrics(type: string, value: Record<string, unknown>): CgroupMetrics {
  const name = type.slice(type.lastIndexOf('/') + 1);
  switch (name) {
    case CGROUP_V1_METRICS_TYPE:
      return decodeV1(value);
    case CGROUP_V2_METRICS_TYPE:
      return decodeV2(value);
    default:
      throw new AgentError(
        'UNIMPLEMENTED',
        `metrics not implemented for task metrics of type ${JSON.stringify(type)} (only cgroup v1 and v2 are supported)`,
      );
  }
}

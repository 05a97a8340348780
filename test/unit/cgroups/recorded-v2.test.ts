/**
 * Recorded cgroup v2 data (test/fixtures/cgroups/recorded-v2/, written by record-v2.ts in the
 * cgroup v2 guest of scripts/vm/test-cgroup-v2.sh --record): real `Tasks.Metrics` responses
 * and task event envelopes from containerd, decoded with the production decoders (the grpc-js
 * deserializer of the vendored proto, ContainerdClient.decodeAny, decodeCgroupMetrics,
 * decodeTaskEvent) and checked against the kernel's own cgroup files read just before and just
 * after each Metrics call.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { CGROUP_V2_METRICS_TYPE, decodeCgroupMetrics, type CgroupMetrics } from '../../../src/cgroups/metrics.js';
import { ContainerdClient } from '../../../src/runtime/containerd/client.js';
import { decodeTaskEvent } from '../../../src/runtime/containerd/events.js';
import type { Envelope__Output } from '../../../src/gen/containerd/containerd/services/events/v1/Envelope.js';
import type { MetricsResponse__Output } from '../../../src/gen/containerd/containerd/services/tasks/v1/MetricsResponse.js';

const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/cgroups/recorded-v2');

interface MetricsFixture {
  readonly description: string;
  readonly source: string;
  readonly cgroup_dir: string;
  readonly response_base64?: string;
  readonly error?: { code: number; details: string };
  readonly cgroup_before?: Record<string, string>;
  readonly cgroup_after?: Record<string, string>;
}

function load(name: string): unknown {
  return JSON.parse(readFileSync(path.join(DIR, name), 'utf8'));
}

/** The production decoders; the socket is never dialled (channels are lazy). */
function client(t: { after: (fn: () => void) => void }): ContainerdClient {
  const c = new ContainerdClient({ socket: '/nonexistent/esb-unit-test.sock', namespace: 'unit' });
  t.after(() => {
    c.close();
  });
  return c;
}

function deserializer(svc: grpc.Client, method: string): (b: Buffer) => unknown {
  return (Object.getPrototypeOf(svc) as { constructor: grpc.ServiceClientConstructor }).constructor.service[method]!.responseDeserialize;
}

function metricsResponse(c: ContainerdClient, f: MetricsFixture): MetricsResponse__Output {
  assert.ok(f.response_base64 !== undefined, 'the fixture holds a response');
  return deserializer(c.svc.tasks, 'Metrics')(Buffer.from(f.response_base64, 'base64')) as MetricsResponse__Output;
}

/** Decodes the one task's sample with the production path (as runtime.ts does). */
function decodeSample(c: ContainerdClient, f: MetricsFixture): { metrics: CgroupMetrics; raw: Record<string, unknown> } {
  const res = metricsResponse(c, f);
  assert.equal(res.metrics.length, 1, 'one sample for the filtered task');
  const any = res.metrics[0]!.data;
  assert.ok(any);
  const decoded = c.decodeAny(any);
  assert.ok(decoded, `decodable ${any.type_url}`);
  assert.equal(decoded.type, CGROUP_V2_METRICS_TYPE);
  return { metrics: decodeCgroupMetrics(decoded.type, decoded.value), raw: decoded.value };
}

/** `key value` lines (memory.stat, memory.events, cpu.stat) → map of BigInt. */
function keyed(text: string | undefined): Map<string, bigint> {
  assert.ok(text !== undefined, 'the cgroup file was recorded');
  const m = new Map<string, bigint>();
  for (const line of text.trim().split('\n')) {
    const [k, v] = line.split(' ');
    if (k && v !== undefined && /^\d+$/.test(v)) m.set(k, BigInt(v));
  }
  return m;
}

function single(text: string | undefined): bigint | 'max' {
  assert.ok(text !== undefined, 'the cgroup file was recorded');
  const v = text.trim();
  return v === 'max' ? 'max' : BigInt(v);
}

/** Asserts lo - tol <= v <= hi + tol, where lo/hi are the two file reads around the call. */
function within(what: string, v: bigint, a: bigint, b: bigint, tol: bigint): void {
  const lo = (a < b ? a : b) - tol;
  const hi = (a > b ? a : b) + tol;
  assert.ok(v >= lo && v <= hi, `${what}: ${v} not within [${lo}, ${hi}] (files read ${a} and ${b}, tolerance ${tol})`);
}

/** What the contract says the numbers are, computed from one read of the cgroup files. */
function fromFiles(files: Record<string, string>): { working: bigint; max: bigint | 'max'; oomKills: bigint; cpuNs: bigint; pids: bigint } {
  const current = single(files['memory.current']);
  assert.notEqual(current, 'max');
  const inactive = keyed(files['memory.stat']).get('inactive_file') ?? 0n;
  return {
    working: (current as bigint) > inactive ? (current as bigint) - inactive : 0n,
    max: single(files['memory.max']),
    oomKills: keyed(files['memory.events']).get('oom_kill') ?? 0n,
    cpuNs: (keyed(files['cpu.stat']).get('usage_usec') ?? 0n) * 1000n,
    pids: single(files['pids.current']) as bigint,
  };
}

// A sleeping task's memory moves by a few pages between two reads (kernel bookkeeping, the
// shim's reads themselves); its CPU time by at most a few ms.
const MEM_TOL = 256n * 1024n;
const CPU_TOL_NS = 20_000_000n;

function crossCheck(name: string, f: MetricsFixture, m: CgroupMetrics): ReturnType<typeof fromFiles> {
  const a = fromFiles(f.cgroup_before!);
  const b = fromFiles(f.cgroup_after!);
  within(`${name} memoryCurrentBytes`, m.memoryCurrentBytes, a.working, b.working, MEM_TOL);
  within(`${name} cpuUsageNs`, m.cpuUsageNs, a.cpuNs, b.cpuNs, CPU_TOL_NS);
  within(`${name} oomKills`, m.oomKills, a.oomKills, b.oomKills, 0n);
  within(`${name} pidsCurrent`, m.pidsCurrent ?? -1n, a.pids, b.pids, 0n);
  assert.equal(a.max, b.max, `${name}: memory.max did not change`);
  assert.equal(m.memoryMaxBytes, a.max === 'max' ? 0n : a.max, `${name}: memoryMaxBytes follows memory.max`);
  return a;
}

test('recorded v2 fixtures: four task states, the cgroup-gone response and the events', () => {
  assert.deepEqual(
    readdirSync(DIR)
      .filter((n) => n.endsWith('.json'))
      .sort(),
    [
      'v2-rec-cgroup-gone.json',
      'v2-rec-events.json',
      'v2-rec-oom.json',
      'v2-rec-paused.json',
      'v2-rec-running.json',
      'v2-rec-unlimited.json',
    ],
  );
});

test('running task: decoded metrics match memory.current − inactive_file, memory.max, cpu.stat and pids.current', (t) => {
  const c = client(t);
  const f = load('v2-rec-running.json') as MetricsFixture;
  const { metrics, raw } = decodeSample(c, f);
  const files = crossCheck('running', f, metrics);
  assert.equal(metrics.memoryMaxBytes, 64n * 1024n * 1024n);
  assert.ok(metrics.cpuUsageNs > 0n, 'the busy loop used CPU');
  assert.equal(metrics.oomKills, 0n);
  // The 8 MiB file is page cache, part of memory.current but not of the working set.
  const inactive = keyed(f.cgroup_before!['memory.stat']).get('inactive_file') ?? 0n;
  assert.ok(inactive > 0n, 'the recorded task has inactive file cache');
  assert.ok(metrics.memoryCurrentBytes < (single(f.cgroup_before!['memory.current']) as bigint), 'working set excludes inactive_file');
  assert.equal(String((raw['memory'] as Record<string, unknown>)['usage_limit']), String(64 * 1024 * 1024));
  assert.ok(files.working > 0n);
});

test('paused task: cgroup.freeze is 1 and the metrics still decode and match the files', (t) => {
  const c = client(t);
  const f = load('v2-rec-paused.json') as MetricsFixture;
  assert.equal(f.cgroup_before!['cgroup.freeze']?.trim(), '1');
  assert.equal(f.cgroup_after!['cgroup.freeze']?.trim(), '1');
  const { metrics } = decodeSample(c, f);
  crossCheck('paused', f, metrics);
  // A frozen cgroup uses no CPU: both reads and the sample agree to the microsecond.
  const a = fromFiles(f.cgroup_before!);
  const b = fromFiles(f.cgroup_after!);
  assert.equal(a.cpuNs, b.cpuNs);
  assert.equal(metrics.cpuUsageNs, a.cpuNs);
});

test('unlimited task: memory.max "max" arrives as 2^64−1 and decodes to 0', (t) => {
  const c = client(t);
  const f = load('v2-rec-unlimited.json') as MetricsFixture;
  assert.equal(f.cgroup_before!['memory.max']?.trim(), 'max');
  const { metrics, raw } = decodeSample(c, f);
  assert.equal(String((raw['memory'] as Record<string, unknown>)['usage_limit']), '18446744073709551615');
  assert.equal(metrics.memoryMaxBytes, 0n);
  crossCheck('unlimited', f, metrics);
});

test('OOM-killed child: memory.events oom_kill 1 is the decoded oomKills; PID 1 lives on', (t) => {
  const c = client(t);
  const f = load('v2-rec-oom.json') as MetricsFixture;
  const { metrics } = decodeSample(c, f);
  crossCheck('oom', f, metrics);
  assert.equal(metrics.oomKills, 1n);
  assert.equal(metrics.memoryMaxBytes, 16n * 1024n * 1024n);
  assert.ok((metrics.pidsCurrent ?? 0n) >= 1n, 'the shell is still there');
});

test('task whose cgroup is gone: containerd answers with no sample, which decodes to an empty list', (t) => {
  const c = client(t);
  const f = load('v2-rec-cgroup-gone.json') as MetricsFixture;
  assert.equal(f.error, undefined, 'containerd answered the call');
  const res = metricsResponse(c, f);
  assert.deepEqual(res.metrics, []);
});

test("recorded /tasks/oom and /tasks/exit envelopes decode to the agent's task events", (t) => {
  const c = client(t);
  const f = load('v2-rec-events.json') as { oom_base64: string; exit_base64: string };
  const decode = deserializer(c.svc.events, 'Subscribe');
  const oomEnv = decode(Buffer.from(f.oom_base64, 'base64')) as Envelope__Output;
  assert.equal(oomEnv.topic, '/tasks/oom');
  assert.equal(oomEnv.namespace, 'esb-cgroups-record');
  const oom = decodeTaskEvent(c, oomEnv);
  assert.deepEqual(oom, { kind: 'oom', containerId: oom?.kind === 'oom' ? oom.containerId : '' });
  assert.match(oom.containerId, /^rec-\d+$/);

  const exitEnv = decode(Buffer.from(f.exit_base64, 'base64')) as Envelope__Output;
  assert.equal(exitEnv.topic, '/tasks/exit');
  const exit = decodeTaskEvent(c, exitEnv);
  assert.ok(exit?.kind === 'exit', 'an exit event');
  assert.match(exit.containerId, /^rec-\d+$/);
  // The recorded exit is the SIGKILL of a task's init process: 128 + 9.
  assert.equal(exit.exitStatus, 137);
  assert.equal(exit.execId, exit.containerId, 'the init process has the container id as exec id');
  assert.ok(exit.exitedAt > 1_600_000_000, 'exited_at is Unix seconds');
});

/**
 * decodeCgroupMetrics over recorded (v1, from a real containerd on this cgroup v1 host) and
 * constructed (v2) `Tasks.Metrics` payloads, decoded through the same protobufjs path as
 * production (ContainerdClient.decodeAny), plus edge cases on literal objects (docs/contract.md#getcontainermetrics, docs/go-agent.md#w20).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { decodeCgroupMetrics, type CgroupMetrics } from '../../../src/cgroups/metrics.js';
import { AgentError } from '../../../src/errors.js';
import { ContainerdClient } from '../../../src/runtime/containerd/client.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/cgroups');

interface Fixture {
  readonly description: string;
  readonly source: string;
  readonly type_url: string;
  readonly value_base64: string;
  readonly expected: Record<string, string> | null;
}

function loadFixtures(): Map<string, Fixture> {
  const out = new Map<string, Fixture>();
  for (const f of readdirSync(FIXTURES)
    .filter((n) => n.endsWith('.json'))
    .sort()) {
    out.set(f, JSON.parse(readFileSync(path.join(FIXTURES, f), 'utf8')) as Fixture);
  }
  return out;
}

/** The production decoder for containerd Anys; the socket is never dialled (channels are lazy). */
function anyDecoder(): ContainerdClient {
  return new ContainerdClient({ socket: '/nonexistent/esb-unit-test.sock', namespace: 'unit' });
}

function asStrings(m: CgroupMetrics): Record<string, string> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
}

test('fixtures cover v1 running/unlimited/OOM, v2 running/unlimited/OOM and an unknown type', () => {
  assert.deepEqual(
    [...loadFixtures().keys()],
    ['unknown-type.json', 'v1-oom.json', 'v1-running.json', 'v1-unlimited.json', 'v2-oom.json', 'v2-running.json', 'v2-unlimited.json'],
  );
});

test('decodeCgroupMetrics gives the expected numbers for every recorded and constructed payload', (t) => {
  const client = anyDecoder();
  t.after(() => {
    client.close();
  });
  for (const [name, f] of loadFixtures()) {
    if (f.expected === null) continue;
    const decoded = client.decodeAny({ type_url: f.type_url, value: Buffer.from(f.value_base64, 'base64') });
    assert.ok(decoded, `${name}: decodable`);
    assert.equal(decoded.type, f.type_url);
    assert.deepEqual(asStrings(decodeCgroupMetrics(decoded.type, decoded.value)), f.expected, `${name}: ${f.description}`);
  }
});

test('recorded v1 payloads: unlimited is PAGE_COUNTER_MAX bytes → 0, working set excludes inactive file cache', (t) => {
  const client = anyDecoder();
  t.after(() => {
    client.close();
  });
  const fx = loadFixtures();
  const raw = (name: string): Record<string, unknown> => {
    const f = fx.get(name)!;
    return client.decodeAny({ type_url: f.type_url, value: Buffer.from(f.value_base64, 'base64') })!.value;
  };
  const unlimited = raw('v1-unlimited.json') as { memory: { usage: { limit: string } } };
  assert.equal(unlimited.memory.usage.limit, '9223372036854771712');
  const running = raw('v1-running.json') as { memory: { usage: { usage: string }; total_inactive_file: string } };
  assert.ok(BigInt(running.memory.total_inactive_file) > 0n, 'the recorded task has inactive file cache');
  const m = decodeCgroupMetrics('io.containerd.cgroups.v1.Metrics', running);
  assert.equal(m.memoryCurrentBytes, BigInt(running.memory.usage.usage) - BigInt(running.memory.total_inactive_file));
  assert.equal(decodeCgroupMetrics('io.containerd.cgroups.v1.Metrics', raw('v1-oom.json')).oomKills, 1n);
});

test('an unknown metrics type → UNIMPLEMENTED "metrics not implemented", naming the type', (t) => {
  const client = anyDecoder();
  t.after(() => {
    client.close();
  });
  const f = loadFixtures().get('unknown-type.json')!;
  const decoded = client.decodeAny({ type_url: f.type_url, value: Buffer.from(f.value_base64, 'base64') })!;
  for (const type of [decoded.type, 'io.containerd.cgroups.v3.Metrics', '']) {
    assert.throws(
      () => decodeCgroupMetrics(type, decoded.value),
      (e: unknown) =>
        e instanceof AgentError &&
        e.code === 'UNIMPLEMENTED' &&
        e.message.includes('metrics not implemented') &&
        e.message.includes(JSON.stringify(type)),
    );
  }
});

const V1 = 'io.containerd.cgroups.v1.Metrics';
const V2 = 'io.containerd.cgroups.v2.Metrics';

interface Row {
  readonly name: string;
  readonly type: string;
  readonly value: Record<string, unknown>;
  readonly want: Partial<Record<keyof CgroupMetrics, bigint | undefined>>;
}

const ROWS: readonly Row[] = [
  {
    name: 'v1 empty sample → zeros, no pids',
    type: V1,
    value: {},
    want: { memoryCurrentBytes: 0n, memoryMaxBytes: 0n, oomKills: 0n, cpuUsageNs: 0n, pidsCurrent: undefined },
  },
  {
    name: 'v2 empty sample → zeros, no pids',
    type: V2,
    value: {},
    want: { memoryCurrentBytes: 0n, memoryMaxBytes: 0n, oomKills: 0n, cpuUsageNs: 0n, pidsCurrent: undefined },
  },
  { name: 'present but empty pids message → 0', type: V2, value: { pids: {} }, want: { pidsCurrent: 0n } },
  {
    name: 'v1 inactive cache above usage (non-atomic read) clamps to 0',
    type: V1,
    value: { memory: { usage: { usage: '4096' }, total_inactive_file: '8192' } },
    want: { memoryCurrentBytes: 0n },
  },
  {
    name: 'v2 inactive cache above usage clamps to 0',
    type: V2,
    value: { memory: { usage: '4096', inactive_file: '8192' } },
    want: { memoryCurrentBytes: 0n },
  },
  {
    name: 'v1 subtracts the hierarchical total_inactive_file, not the local inactive_file',
    type: V1,
    value: { memory: { usage: { usage: '100000' }, inactive_file: '10000', total_inactive_file: '30000' } },
    want: { memoryCurrentBytes: 70000n },
  },
  {
    name: 'v1 unlimited with 64 KiB pages (PAGE_COUNTER_MAX × 65536) → 0',
    type: V1,
    value: { memory: { usage: { limit: '9223372036854710272' } } },
    want: { memoryMaxBytes: 0n },
  },
  {
    name: 'v1 limit just under 2^62 is a limit',
    type: V1,
    value: { memory: { usage: { limit: String(2n ** 62n - 1n) } } },
    want: { memoryMaxBytes: 2n ** 62n - 1n },
  },
  { name: 'v2 limit 2^64−1 → 0', type: V2, value: { memory: { usage_limit: '18446744073709551615' } }, want: { memoryMaxBytes: 0n } },
  {
    name: 'v1 cpu total above 2^53 keeps every digit',
    type: V1,
    value: { cpu: { usage: { total: '18446744073709551001' } } },
    want: { cpuUsageNs: 18446744073709551001n },
  },
  {
    name: 'v2 cpu usage_usec × 1000 above 2^53 is exact',
    type: V2,
    value: { cpu: { usage_usec: '9007199254740993' } },
    want: { cpuUsageNs: 9007199254740993000n },
  },
  {
    name: 'v2 counts oom_kill only (oom = limit hits without a kill)',
    type: V2,
    value: { memory_events: { oom: '5', max: '40' } },
    want: { oomKills: 0n },
  },
  { name: 'v1 oom_kill', type: V1, value: { memory_oom_control: { under_oom: '1', oom_kill: '3' } }, want: { oomKills: 3n } },
  {
    name: 'numbers and bigints are accepted too',
    type: V2,
    value: { memory: { usage: 5000, inactive_file: 1000n }, pids: { current: 4 } },
    want: { memoryCurrentBytes: 4000n, pidsCurrent: 4n },
  },
  {
    name: 'a type URL prefix is ignored',
    type: `type.googleapis.com/${V2}`,
    value: { cpu: { usage_usec: '2' } },
    want: { cpuUsageNs: 2000n },
  },
];

test('decodeCgroupMetrics edge cases', () => {
  for (const row of ROWS) {
    const got = decodeCgroupMetrics(row.type, row.value);
    for (const [k, v] of Object.entries(row.want)) {
      assert.equal(got[k as keyof CgroupMetrics], v, `${row.name}: ${k}`);
    }
    if ('pidsCurrent' in row.want && row.want.pidsCurrent === undefined)
      assert.ok(!('pidsCurrent' in got), `${row.name}: no pidsCurrent key`);
  }
});

test('a counter that is not an unsigned integer → INTERNAL naming the field', () => {
  for (const bad of ['-1', '1.5', 'abc', -1, 1.5, {}, true]) {
    assert.throws(
      () => decodeCgroupMetrics(V1, { memory: { usage: { usage: bad } } }),
      (e: unknown) => e instanceof AgentError && e.code === 'INTERNAL' && e.message.includes('memory.usage.usage'),
      JSON.stringify(bad),
    );
  }
});

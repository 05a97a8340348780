import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { IdleSweeper } from '../../../src/runtime/idle-sweep.js';
import { LAST_USED_FILE, LastUsedFile } from '../../../src/runtime/last-used-file.js';
import { AgentMetrics } from '../../../src/metrics.js';
import { AgentError } from '../../../src/errors.js';
import { FakeRuntime, fakeWorker } from '../../helpers/fake-runtime.js';
import { LogCapture, captureLogger } from '../../helpers/logs.js';

async function counter(m: AgentMetrics, name: string): Promise<number> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return metric?.values.reduce((a, v) => a + v.value, 0) ?? 0;
}

test('IdleSweeper destroys exactly the workers idle longer than the TTL, any owner or status, and counts them', async () => {
  const rt = new FakeRuntime().add(
    fakeWorker({ id: 'old-running', lastUsedAt: 1000, ownerId: 'gw-a' }),
    fakeWorker({ id: 'old-paused', lastUsedAt: 1039, ownerId: 'gw-b', status: 'PAUSED' }),
    fakeWorker({ id: 'at-cutoff', lastUsedAt: 1040 }),
    fakeWorker({ id: 'fresh', lastUsedAt: 1099 }),
  );
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const logs = new LogCapture();
  const s = new IdleSweeper({ runtime: rt, ttlSeconds: 60, log: captureLogger(logs), metrics });
  const destroyed = await s.sweep(1100);
  assert.deepEqual(destroyed.sort(), ['old-paused', 'old-running']);
  assert.deepEqual([...rt.workers.keys()].sort(), ['at-cutoff', 'fresh']);
  assert.equal(await counter(metrics, 'esb_agent_idle_destroyed_total'), 2);
  const [line] = logs.find('destroyed an idle worker', { id: 'old-running' });
  assert.ok(line);
  assert.equal(line['idleSeconds'], 100);
  assert.equal(line['owner'], 'gw-a');
});

test('IdleSweeper: a failing destroy is logged, not counted, and the others still go', async () => {
  const rt = new FakeRuntime().add(fakeWorker({ id: 'a', lastUsedAt: 1 }), fakeWorker({ id: 'b', lastUsedAt: 1 }));
  rt.onDestroy = (id) => {
    if (id === 'a') return Promise.reject(new AgentError('UNAVAILABLE', 'containerd is down'));
    rt.workers.delete(id);
    return Promise.resolve();
  };
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const logs = new LogCapture();
  const s = new IdleSweeper({ runtime: rt, ttlSeconds: 10, log: captureLogger(logs), metrics });
  assert.deepEqual(await s.sweep(100), ['b']);
  assert.equal(await counter(metrics, 'esb_agent_idle_destroyed_total'), 1);
  assert.match(
    String(logs.find('could not destroy an idle worker; retried at the next sweep', { id: 'a' })[0]?.['err']),
    /containerd is down/,
  );
});

test('IdleSweeper: off at TTL 0, interval is TTL/2 capped to [1 s, 30 s], timer sweeps and stop() waits', async () => {
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const log = captureLogger(new LogCapture());
  const rt = new FakeRuntime().add(fakeWorker({ id: 'idle', lastUsedAt: 0 }));
  const off = new IdleSweeper({ runtime: rt, ttlSeconds: 0, log, metrics, intervalMs: 5 });
  off.start();
  await new Promise((r) => setTimeout(r, 30));
  await off.stop();
  assert.equal(rt.workers.size, 1, 'TTL 0 must never destroy');
  assert.equal(new IdleSweeper({ runtime: rt, ttlSeconds: 1, log, metrics }).intervalMs, 1000);
  assert.equal(new IdleSweeper({ runtime: rt, ttlSeconds: 20, log, metrics }).intervalMs, 10_000);
  assert.equal(new IdleSweeper({ runtime: rt, ttlSeconds: 3600, log, metrics }).intervalMs, 30_000);
  const on = new IdleSweeper({ runtime: rt, ttlSeconds: 1, log, metrics, intervalMs: 5 });
  on.start();
  const remaining = (): number => rt.workers.size;
  for (let i = 0; i < 100 && remaining() > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await on.stop();
  assert.equal(rt.workers.size, 0);
});

test('LastUsedFile: saves only on change, atomically, and loads back; a missing or corrupt file means empty', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'esb-lastused-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const logs = new LogCapture();
  let times = new Map([
    ['w1', 100],
    ['w2', 200],
  ]);
  const f = new LastUsedFile(dir, captureLogger(logs), () => times);
  assert.deepEqual(await f.load(), new Map());
  await f.flush();
  const file = path.join(dir, LAST_USED_FILE);
  assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { w1: 100, w2: 200 });
  // No change: no write (the file we scribble over stays as we left it).
  await writeFile(file, '{"w1":1}');
  await f.flush();
  assert.equal(await readFile(file, 'utf8'), '{"w1":1}');
  times = new Map([['w2', 250]]);
  await f.close();
  assert.deepEqual(await new LastUsedFile(dir, captureLogger(logs), () => new Map()).load(), new Map([['w2', 250]]));
  await writeFile(file, '{not json');
  assert.deepEqual(await new LastUsedFile(dir, captureLogger(logs), () => new Map()).load(), new Map());
  assert.equal(logs.find('the last-used file is corrupt; starting from created_at').length, 1);
  await writeFile(file, '{"ok":5,"bad":"x","inf":null}');
  assert.deepEqual(await new LastUsedFile(dir, captureLogger(logs), () => new Map()).load(), new Map([['ok', 5]]));
});

/**
 * The dockerd harness (dockerd.ts) itself: its teardown leaves no dockerd, containerd or shim
 * process, bridge, mount or temp dir behind. Needs root and dockerd, like the integration tests.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startDockerd } from './dockerd.js';
import { pushTestImages } from './images.js';
import { startRegistry } from './registry.js';

test('dockerd harness: teardown leaves no dockerd, containerd or shim process, bridge or temp dir', async (t) => {
  const d = await startDockerd();
  t.after(() => d.stop());
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const images = await pushTestImages(reg);
  const pull = await d.client.request({
    method: 'POST',
    path: '/images/create',
    query: { fromImage: `${reg.host}/esb-test/worker`, tag: 'v1' },
    what: 'pull',
  });
  assert.equal(pull.status, 200, pull.body);
  await d.client.json({
    method: 'POST',
    path: '/containers/create',
    query: { name: 'harness-probe' },
    body: { Image: images.worker, HostConfig: { NetworkMode: d.network.name } },
    what: 'create',
  });
  await d.client.json({ method: 'POST', path: '/containers/harness-probe/start', what: 'start' });
  const running = d.processes();
  assert.ok(running.length >= 3, `expected dockerd, containerd and a shim, found pids ${running.join(',')}`);
  await d.stop();
  assert.deepEqual(d.processes(), []);
  // Gone, or a zombie: this sandbox's pid 1 may never reap orphans, which hold nothing else.
  const alive = (pid: number): boolean => {
    try {
      return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  assert.deepEqual(running.filter(alive), [], 'dockerd, containerd and shims have exited');
  assert.throws(() => readFileSync(path.join(d.dir, 'daemon.json')), 'temp dir removed');
  assert.equal(readFileSync('/proc/self/mounts', 'utf8').includes(d.dir), false, 'nothing mounted under the temp dir');
  assert.throws(() => execFileSync('ip', ['link', 'show', d.network.bridge], { stdio: 'ignore' }), `bridge ${d.network.bridge} removed`);
});

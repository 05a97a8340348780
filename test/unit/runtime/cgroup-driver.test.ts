/**
 * AGENT_CGROUP_DRIVER and CONTAINERD_RUNC_BINARY: the spec's cgroupsPath form, the runc shim's
 * options as containerd receives them, and where reconciliation looks for worker cgroups.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { listWorkerCgroups, workerCgroupsPath } from '../../../src/cgroups/worker-cgroups.js';
import { ContainerdClient } from '../../../src/runtime/containerd/client.js';
import { runcOptions } from '../../../src/runtime/containerd/containers.js';

test('cgroupsPath: /<ns>/<id> for cgroupfs, system.slice:<ns>:<id> for systemd', () => {
  assert.equal(workerCgroupsPath('cgroupfs', 'esb', 'esb-default-fn-1'), '/esb/esb-default-fn-1');
  assert.equal(workerCgroupsPath('systemd', 'esb', 'esb-default-fn-1'), 'system.slice:esb:esb-default-fn-1');
});

test('runc options: nothing by default; SystemdCgroup and BinaryName encoded as containerd.runc.v1.Options', (t) => {
  const c = new ContainerdClient({ socket: '/nonexistent/containerd.sock', namespace: 'esb' });
  t.after(() => {
    c.close();
  });
  assert.equal(runcOptions(c, { cgroupDriver: 'cgroupfs', runcBinary: undefined }), undefined, "the shim's defaults: send nothing");
  const both = runcOptions(c, { cgroupDriver: 'systemd', runcBinary: '/usr/bin/crun' });
  assert.ok(both);
  assert.equal(both.type_url, 'containerd.runc.v1.Options');
  assert.deepEqual(c.decodeAny(both)?.value, { systemd_cgroup: true, binary_name: '/usr/bin/crun' });
  // Field numbers as the shim reads them: binary_name = 6 (string), systemd_cgroup = 9 (bool).
  assert.deepEqual([...both.value], [0x32, 13, ...Buffer.from('/usr/bin/crun'), 0x48, 1]);
  const binOnly = runcOptions(c, { cgroupDriver: 'cgroupfs', runcBinary: 'crun' });
  assert.deepEqual(c.decodeAny(binOnly)?.value, { binary_name: 'crun' });
});

test('listWorkerCgroups finds systemd scopes of the namespace on v2 and v1 layouts', (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'esb-cg-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  const v2 = path.join(root, 'v2');
  mkdirSync(path.join(v2, 'system.slice', 'esb-esb-default-fn-1.scope'), { recursive: true });
  mkdirSync(path.join(v2, 'system.slice', 'containerd.service'), { recursive: true });
  mkdirSync(path.join(v2, 'system.slice', 'esb-.scope'), { recursive: true });
  mkdirSync(path.join(v2, 'esb', 'esb-default-fn-2'), { recursive: true });
  writeFileSync(path.join(v2, 'cgroup.controllers'), 'cpu memory pids\n');
  return (async () => {
    assert.deepEqual([...(await listWorkerCgroups('esb', v2, 'systemd')).keys()], ['esb-default-fn-1']);
    assert.deepEqual([...(await listWorkerCgroups('esb', v2, 'cgroupfs')).keys()], ['esb-default-fn-2']);
    const v1 = path.join(root, 'v1');
    for (const ctl of ['memory', 'pids']) mkdirSync(path.join(v1, ctl, 'system.slice', 'esb-esb-default-fn-3.scope'), { recursive: true });
    const found = await listWorkerCgroups('esb', v1, 'systemd');
    assert.deepEqual([...found.keys()], ['esb-default-fn-3']);
    assert.equal(found.get('esb-default-fn-3')?.length, 2, 'one directory per v1 hierarchy');
  })();
});

/**
 * Component tests of ContainerdRuntime: the real runtime (ensure, rollback, reconciliation)
 * against a fake containerd (test/helpers/fake-containerd.ts: a grpc-js server on a unix socket
 * with in-memory state), fake CNI plugins (test/fixtures/cni) and an injected netns maker
 * (ContainerdRuntimeDeps.netns). No root, no containerd, no kernel state: runs in the unit suite.
 */
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { silentLogger } from '../../../src/log.js';
import { AgentMetrics } from '../../../src/metrics.js';
import { ContainerdRuntime } from '../../../src/runtime/containerd/runtime.js';
import { CREATED_BY, KIND_FUNCTION, LABELS, workerIdPrefix } from '../../../src/worker/naming.js';
import { FakeContainerd } from '../../helpers/fake-containerd.js';
import { FakePlugins } from '../../fixtures/cni/fake-plugins.js';

const NAMESPACE = 'esb-component';
const SNAPSHOTTER = 'overlayfs';
const IMAGE = 'registry.test/fn/hello:latest';
const WORKER_IP = '10.88.0.7';
/** A live netns handle any user can stat: CNI ADD checks that the path is one. */
const FAKE_NETNS_PATH = '/proc/self/ns/net';

interface Env {
  fake: FakeContainerd;
  plugins: FakePlugins;
  tmp: string;
  config: Config;
  /** Names of the netns the fake netns maker holds. */
  netns: Set<string>;
  runtime: ContainerdRuntime;
}

async function setUp(): Promise<Env> {
  const fake = await FakeContainerd.start();
  const plugins = await FakePlugins.create(['loopback', 'fakenet']);
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-runtime-component-'));
  const confFile = path.join(tmp, 'net.conflist');
  await fs.writeFile(confFile, JSON.stringify({ cniVersion: '1.0.0', name: 'esb-component', plugins: [{ type: 'fakenet' }] }));
  await plugins.set('fakenet', 'result', {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: FAKE_NETNS_PATH }],
    ips: [{ address: `${WORKER_IP}/16`, interface: 0 }],
  });
  const config = loadConfig({
    HOME: tmp,
    CONTAINERD_SOCKET: fake.socket,
    CONTAINERD_NAMESPACE: NAMESPACE,
    CONTAINERD_SNAPSHOTTER: SNAPSHOTTER,
    AGENT_STATE_DIR: path.join(tmp, 'state'),
    CNI_CONF_FILE: confFile,
    CNI_BIN_DIR: plugins.dir,
    AGENT_WORKER_FIREWALL: 'false',
    IMAGE_PULL_POLICY: 'never',
  });
  fake.addImage(IMAGE, SNAPSHOTTER);
  const netns = new Set<string>();
  const runtime = new ContainerdRuntime(config, {
    log: silentLogger(),
    metrics: new AgentMetrics({ defaultMetrics: false }),
    netns: {
      create: (name) => {
        if (netns.has(name)) return Promise.reject(new Error(`netns ${name} exists`));
        netns.add(name);
        return Promise.resolve(FAKE_NETNS_PATH);
      },
      remove: (name) => {
        netns.delete(name);
        return Promise.resolve();
      },
    },
  });
  await runtime.start();
  return { fake, plugins, tmp, config, netns, runtime };
}

async function tearDown(e: Env): Promise<void> {
  await e.runtime.close();
  await e.fake.close();
  await e.plugins.remove();
  await fs.rm(e.tmp, { recursive: true, force: true });
}

const call = (): { signal: AbortSignal } => ({ signal: AbortSignal.timeout(30_000) });

function ensureReq(functionName = 'hello'): Parameters<ContainerdRuntime['ensure']>[0] {
  return { functionName, ownerId: 'owner-a', image: IMAGE, env: {} };
}

/** Ids with a CNI cache entry (an attachment not yet DEL'ed). */
async function cniCacheEntries(e: Env): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = path.join(dir, n);
      if ((await fs.stat(p)).isDirectory()) await walk(p);
      else found.push(p);
    }
  };
  await walk(path.join(e.config.stateDir, 'cni-cache'));
  return found;
}

async function workerDirs(e: Env): Promise<string[]> {
  try {
    return await fs.readdir(path.join(e.config.stateDir, 'workers'));
  } catch {
    return [];
  }
}

/** Waits until `check` holds (the ensure lease is deleted off the reply path). */
async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Everything a failed Ensure may have made is gone: asserted one kind at a time for clear failures. */
async function assertNothingLeft(e: Env): Promise<void> {
  assert.deepEqual([...e.fake.containers.keys()], [], 'containers left');
  assert.deepEqual([...e.fake.tasks.keys()], [], 'tasks left');
  assert.deepEqual(e.fake.activeSnapshots(), [], 'worker snapshots left');
  assert.deepEqual([...e.fake.leases.keys()], [], 'leases left');
  assert.deepEqual([...e.netns], [], 'netns left');
  assert.deepEqual(await cniCacheEntries(e), [], 'CNI attachments left');
  assert.deepEqual(await workerDirs(e), [], 'worker state dirs left');
  assert.equal(e.runtime.workers.size, 0, 'workers in the table');
}

describe('ContainerdRuntime against a fake containerd', { concurrency: false }, () => {
  let e: Env;
  beforeEach(async () => {
    e = await setUp();
  });
  afterEach(async () => {
    await tearDown(e);
  });

  it('start-up connects, creates its namespace and subscribes to events', () => {
    assert.ok(e.fake.namespaces.has(NAMESPACE));
    assert.ok(e.fake.calls.includes('events.Subscribe'));
  });

  it('a successful Ensure creates the container, then the task, then starts it, with the labels', async () => {
    const info = await e.runtime.ensure(ensureReq(), call());
    assert.equal(info.ipAddress, WORKER_IP);
    assert.ok(info.id.startsWith(workerIdPrefix(e.config.brand, e.config.env)), info.id);

    const order = e.fake.calls.filter((c) => /^(containers\.Create|tasks\.Create|tasks\.Start) /.test(c));
    assert.deepEqual(order, [`containers.Create ${info.id}`, `tasks.Create ${info.id}`, `tasks.Start ${info.id}`]);

    const rec = e.fake.containers.get(info.id);
    assert.ok(rec, 'container record');
    assert.equal(rec.labels[LABELS.createdBy], CREATED_BY);
    assert.equal(rec.labels[LABELS.kind], KIND_FUNCTION);
    assert.equal(rec.labels[LABELS.env], e.config.env);
    assert.equal(rec.labels[LABELS.function], 'hello');
    assert.equal(rec.labels[LABELS.owner], 'owner-a');
    assert.equal(rec.labels[LABELS.ip], WORKER_IP);
    assert.equal(rec.labels[LABELS.netns], FAKE_NETNS_PATH);
    assert.equal(rec.labels[LABELS.cniNetwork], 'esb-component');
    assert.equal(rec.snapshot_key, info.id);
    assert.equal(rec.snapshotter, SNAPSHOTTER);

    assert.equal(e.fake.tasks.get(info.id)?.status, 'RUNNING');
    assert.deepEqual(e.fake.activeSnapshots(), [info.id]);
    assert.deepEqual([...e.netns], [info.id]);
    const adds = await e.plugins.calls('ADD');
    assert.deepEqual(adds.map((c) => `${c.type} ${c.containerId}`).sort(), [`fakenet ${info.id}`, `loopback ${info.id}`]);
    assert.equal(e.runtime.workers.get(info.id)?.status, 'RUNNING');
    // The lease protected the snapshot until the container rooted it, then goes.
    await eventually(() => e.fake.leases.size === 0);
  });

  for (const failing of ['tasks.Create', 'tasks.Start'] as const) {
    it(`a failure at ${failing} rolls back the container, snapshot, lease, netns and network`, async () => {
      e.fake.failOn(failing, { code: grpc.status.UNKNOWN, details: `runc: injected failure of ${failing}` });
      await assert.rejects(e.runtime.ensure(ensureReq(), call()), (err: Error) => {
        assert.match(err.message, /injected failure/);
        return true;
      });
      // The steps before the failure really ran (so the emptiness below means rollback).
      const made = e.fake.callsOf('containers.Create');
      assert.equal(made.length, 1);
      const id = made[0]!.split(' ')[1]!;
      assert.equal(e.fake.callsOf('snapshots.Prepare').length, 1);
      assert.equal(e.fake.callsOf('leases.Create').length, 1);
      assert.deepEqual(e.fake.callsOf('containers.Delete'), [`containers.Delete ${id}`]);
      assert.deepEqual(e.fake.callsOf('snapshots.Remove'), [`snapshots.Remove ${id}`]);
      assert.equal(e.fake.callsOf('leases.Delete').length, 1);
      if (failing === 'tasks.Start') assert.deepEqual(e.fake.callsOf('tasks.Delete'), [`tasks.Delete ${id}`]);
      // CNI: whatever was ADDed was DELeted.
      const adds = (await e.plugins.calls('ADD')).map((c) => c.type).sort();
      const dels = (await e.plugins.calls('DEL')).map((c) => c.type).sort();
      for (const t of adds) assert.ok(dels.includes(t), `CNI ${t} ADD without DEL`);
      await assertNothingLeft(e);
    });
  }

  it('a failure at containers.Create rolls back the snapshot, lease and netns and never attaches the network', async () => {
    e.fake.failOn('containers.Create');
    await assert.rejects(e.runtime.ensure(ensureReq(), call()));
    assert.equal(e.fake.callsOf('snapshots.Prepare').length, 1);
    assert.deepEqual(await e.plugins.calls('ADD'), []);
    await assertNothingLeft(e);
  });

  it('reconciliation removes orphan containers and tasks and keeps a healthy worker', async () => {
    const healthy = await e.runtime.ensure(ensureReq('keep'), call());
    await eventually(() => e.fake.leases.size === 0);
    const prefix = workerIdPrefix(e.config.brand, e.config.env);
    const managed = { [LABELS.createdBy]: CREATED_BY, [LABELS.env]: e.config.env, [LABELS.kind]: KIND_FUNCTION };

    // An Ensure that died after Tasks.Create: complete labels, a task never started.
    const unstarted = `${prefix}orphan-aaaaaaaa`;
    e.fake.containers.set(unstarted, {
      ...structuredClone(e.fake.containers.get(healthy.id)!),
      id: unstarted,
      snapshot_key: unstarted,
      labels: { ...managed, [LABELS.function]: 'orphan', [LABELS.owner]: 'owner-a', [LABELS.ip]: '10.88.0.9' },
    });
    e.fake.putTask(unstarted, 'CREATED');
    e.fake.snapshots.set(`${SNAPSHOTTER}/${unstarted}`, { key: unstarted, parent: '', kind: 'ACTIVE', labels: {} });
    // An Ensure that died before CNI answered: no IP label, a running task.
    const noIp = `${prefix}orphan-bbbbbbbb`;
    e.fake.containers.set(noIp, {
      ...structuredClone(e.fake.containers.get(healthy.id)!),
      id: noIp,
      snapshot_key: noIp,
      labels: { ...managed, [LABELS.function]: 'orphan', [LABELS.owner]: 'owner-a' },
    });
    e.fake.putTask(noIp, 'RUNNING');
    // Someone else's container in the same namespace: not ours, never touched.
    const foreign = 'someone-elses';
    e.fake.containers.set(foreign, { ...structuredClone(e.fake.containers.get(healthy.id)!), id: foreign, labels: { app: 'other' } });
    e.fake.putTask(foreign, 'CREATED');

    const result = await e.runtime.reconcile({ startup: false });

    assert.deepEqual(result.failed, []);
    assert.deepEqual([...result.tornDown].sort(), [unstarted, noIp].sort());
    assert.equal(result.removed.container, 2);
    assert.equal(result.removed.task, 2);
    assert.equal(result.removed.snapshot, 1);
    assert.deepEqual([...e.fake.containers.keys()].sort(), [foreign, healthy.id].sort());
    assert.deepEqual([...e.fake.tasks.keys()].sort(), [foreign, healthy.id].sort());
    assert.equal(e.fake.tasks.get(healthy.id)?.status, 'RUNNING');
    assert.equal(e.fake.tasks.get(foreign)?.status, 'CREATED');
    assert.deepEqual(e.fake.activeSnapshots(), [healthy.id]);
    assert.deepEqual(await workerDirs(e), [healthy.id]);
    assert.equal(e.fake.containers.get(healthy.id)?.labels[LABELS.ip], WORKER_IP);
  });

  it('start-up reconciliation removes a half-made worker left by an earlier run and keeps a live one', async () => {
    const healthy = await e.runtime.ensure(ensureReq('keep'), call());
    await eventually(() => e.fake.leases.size === 0);
    // An earlier run's Ensure that died mid-way: its state dir entry, snapshot, container
    // without a started task, and its lease.
    const prefix = workerIdPrefix(e.config.brand, e.config.env);
    const orphan = `${prefix}crashed-cccccccc`;
    await fs.mkdir(path.join(e.config.stateDir, 'workers', orphan), { recursive: true });
    e.fake.snapshots.set(`${SNAPSHOTTER}/${orphan}`, { key: orphan, parent: '', kind: 'ACTIVE', labels: {} });
    e.fake.containers.set(orphan, {
      ...structuredClone(e.fake.containers.get(healthy.id)!),
      id: orphan,
      snapshot_key: orphan,
      labels: { ...structuredClone(e.fake.containers.get(healthy.id)!.labels), [LABELS.ip]: '' },
    });
    e.fake.putTask(orphan, 'CREATED');
    e.fake.leases.set('esb-ensure-old', { id: 'esb-ensure-old', labels: { 'com.esb.lease': 'ensure' }, resources: [] });
    const foreignLease = { id: 'not-ours', labels: {}, resources: [] };
    e.fake.leases.set(foreignLease.id, foreignLease);

    const result = await e.runtime.reconcile({ startup: true });

    assert.deepEqual(result.tornDown, [orphan]);
    assert.ok(!e.fake.containers.has(orphan) && !e.fake.tasks.has(orphan), 'orphan container/task removed');
    assert.deepEqual(e.fake.activeSnapshots(), [healthy.id]);
    assert.deepEqual(await workerDirs(e), [healthy.id]);
    assert.deepEqual([...e.fake.leases.keys()], ['not-ours']);
    assert.equal(e.fake.tasks.get(healthy.id)?.status, 'RUNNING');
  });

  it('destroy tears a worker down completely', async () => {
    const w = await e.runtime.ensure(ensureReq(), call());
    await eventually(() => e.fake.leases.size === 0);
    await e.runtime.destroy(w.id, call());
    assert.deepEqual([...e.fake.containers.keys()], []);
    assert.deepEqual([...e.fake.tasks.keys()], []);
    assert.deepEqual(e.fake.activeSnapshots(), []);
    assert.deepEqual(await cniCacheEntries(e), []);
    assert.deepEqual(await workerDirs(e), []);
  });
});

/**
 * The leak checker itself (leaks.ts): every integration test's "nothing leaked" rests on it, so
 * it must see each kind of debris it claims to. Runs against the fake containerd
 * (test/helpers/fake-containerd.ts) and a temp state dir: no root. The kernel-side kinds
 * (netns, veths, cgroups, mounts) read the host and are only checked to be empty here.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import { FakeContainerd } from '../helpers/fake-containerd.js';
import { findLeaks, leakCount, type LeakScope } from './leaks.js';

const SNAPSHOTTER = 'overlayfs';
const PREFIX = 'esb-leakcheck-';

let fake: FakeContainerd;
let client: ContainerdClient;
let tmp: string;
let scope: LeakScope;

beforeEach(async () => {
  fake = await FakeContainerd.start();
  client = new ContainerdClient({ socket: fake.socket, namespace: 'esb-leakcheck' });
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-leakcheck-'));
  scope = {
    client,
    snapshotter: SNAPSHOTTER,
    idPrefix: PREFIX,
    bridge: 'esb-no-such-br0',
    netDir: path.join(tmp, 'ipam'),
    networkName: 'esb-net',
    stateDir: path.join(tmp, 'state'),
  };
});

afterEach(async () => {
  client.close();
  await fake.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

test('a clean scope has no leaks; committed image layers do not count', async () => {
  fake.addImage('registry.test/fn:latest', SNAPSHOTTER);
  const r = await findLeaks(scope);
  assert.equal(leakCount(r), 0, JSON.stringify(r));
});

test('each kind of debris it can see without root is reported, and counted', async () => {
  const id = `${PREFIX}fn-00000001`;
  fake.containers.set(id, {
    id,
    labels: {},
    image: '',
    runtime: null,
    spec: null,
    snapshotter: SNAPSHOTTER,
    snapshot_key: id,
    created_at: { seconds: '0', nanos: 0 },
    updated_at: { seconds: '0', nanos: 0 },
    extensions: {},
  });
  fake.putTask(id, 'RUNNING');
  fake.snapshots.set(`${SNAPSHOTTER}/${id}`, { key: id, parent: '', kind: 'ACTIVE', labels: {} });
  fake.leases.set('lease-1', { id: 'lease-1', labels: {}, resources: [] });
  await fs.mkdir(path.join(scope.netDir, scope.networkName), { recursive: true });
  await fs.writeFile(path.join(scope.netDir, scope.networkName, '10.88.0.5'), id);
  await fs.writeFile(path.join(scope.netDir, scope.networkName, 'lock'), ''); // not a reservation
  await fs.mkdir(path.join(scope.stateDir, 'cni-cache', 'results'), { recursive: true });
  await fs.writeFile(path.join(scope.stateDir, 'cni-cache', 'results', `esb-net-${id}-eth0`), '{}');
  await fs.mkdir(path.join(scope.stateDir, 'workers', id), { recursive: true });

  const r = await findLeaks(scope);
  assert.deepEqual(r.containers, [id]);
  assert.deepEqual(r.tasks, [id]);
  assert.deepEqual(r.snapshots, [id]);
  assert.deepEqual(r.leases, ['lease-1']);
  assert.deepEqual(r.ipReservations, ['10.88.0.5']);
  assert.deepEqual(r.cniCache, [`esb-net-${id}-eth0`]);
  assert.deepEqual(r.workerDirs, [id]);
  assert.equal(leakCount(r), 7);
});

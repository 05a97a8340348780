import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultSpec, withHostname } from '../../../src/runtime/containerd/spec/spec.js';
import { addHostsEntry, writeWorkerFiles } from '../../../src/runtime/containerd/worker-files.js';
import { workerContainerBody } from '../../../src/runtime/docker/create.js';
import { MAX_HOSTNAME_LENGTH, workerHostname } from '../../../src/worker/naming.js';

// Ids whose 63-character cut ends in '.', '-' or a run of separators, plus plain short and long ones.
const IDS = [
  'esb-prod-fn-0a1b2c3d',
  `${'a'.repeat(62)}.b-0a1b2c3d`,
  `${'a'.repeat(62)}-b-0a1b2c3d`,
  `${'a'.repeat(61)}.-b-0a1b2c3d`,
  `${'a'.repeat(61)}-.b-0a1b2c3d`,
  'x'.repeat(76),
  'short.',
  'short-',
];

test('workerHostname: at most 63 characters, no trailing character other than letters, digits and "-", idempotent', () => {
  for (const id of IDS) {
    const h = workerHostname(id);
    assert.ok(h.length <= MAX_HOSTNAME_LENGTH, h);
    assert.doesNotMatch(h, /[^A-Za-z0-9-]$/, h);
    assert.ok(id.startsWith(h), h);
    assert.equal(workerHostname(h), h);
  }
});

test("the hosts file names the worker by the spec's hostname and docker's (trailing '.', '-', long ids)", async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'esb-hostname-'));
  try {
    for (const id of IDS) {
      const spec = defaultSpec('esb', id);
      withHostname(id)(spec);
      const files = await writeWorkerFiles(stateDir, id, '10.0.0.1');
      // What the containerd runtime passes (its own 63-character cut of the id).
      await addHostsEntry(files, '10.0.0.9', id.slice(0, 63));
      const last = (await readFile(files.hosts, 'utf8')).trimEnd().split('\n').at(-1) ?? '';
      const [ip, name] = last.split('\t');
      assert.equal(ip, '10.0.0.9');
      assert.equal(name, spec.hostname, `hosts file vs spec for ${id}`);
      const body = workerContainerBody({
        id,
        image: 'img',
        env: {},
        memoryMb: 128,
        readonlyRootfs: true,
        tmpSizeMb: 64,
        network: 'esb-net',
        labels: { functionName: 'fn', env: 'prod', ownerId: 'gw', createdAt: 1700000000, memoryMb: 128, image: 'img' },
      }) as { Hostname: string };
      assert.equal(body.Hostname, spec.hostname, `docker vs spec for ${id}`);
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

/**
 * The parts of reading image files that need root, like the agent: a device node in the image
 * is refused without being opened, and the read-only temp mount (flags, cleanup, leftovers of
 * a killed agent removed). The rest (secure join, FIFO, size bounds, mount arguments) is in
 * test/unit/runtime/image-rootfs.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { ImageFileError, readImageFile } from '../../src/runtime/containerd/rootfs/read-file.js';
import { mountPointsUnder, mountsDir, removeStaleMounts, withReadonlyMount } from '../../src/runtime/containerd/rootfs/readonly-mount.js';

function tree(t: TestContext): { root: string } {
  const base = mkdtempSync(path.join(os.tmpdir(), 'esb-rootfs-'));
  t.after(() => {
    for (const m of readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')) {
      if (m.startsWith(base + '/')) execFileSync('umount', ['-l', m]);
    }
    rmSync(base, { recursive: true, force: true });
  });
  const root = path.join(base, 'root');
  mkdirSync(path.join(root, 'etc'), { recursive: true });
  mkdirSync(path.join(root, 'srv/accounts'), { recursive: true });
  writeFileSync(path.join(root, 'srv/accounts/passwd'), 'app:x:1000:1000::/:/bin/sh\n');
  return { root };
}

test('readImageFile: a character device in the image is refused at once, never opened', async (t) => {
  const { root } = tree(t);
  mkdirSync(path.join(root, 'dev'));
  execFileSync('mknod', [path.join(root, 'dev/zero'), 'c', '1', '5']);
  symlinkSync('/dev/zero', path.join(root, 'etc/zero'));
  const t0 = Date.now();
  await assert.rejects(readImageFile(root, '/etc/zero', 1024), (err: unknown) => {
    assert.ok(err instanceof ImageFileError, String(err));
    assert.equal(err.problem.kind, 'not-regular');
    assert.match(err.problem.detail, /character device/);
    return true;
  });
  assert.ok(Date.now() - t0 < 2000, 'answered at once');
});

test('withReadonlyMount: a read-only nodev,nosuid,noexec mount under the state dir, gone afterwards', async (t) => {
  const { root } = tree(t);
  const stateDir = path.join(path.dirname(root), 'state');
  const seen = await withReadonlyMount(stateDir, [{ type: 'bind', source: root, options: ['rbind', 'rw'] }], (mnt) => {
    const line =
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find((l) => l.split(' ')[4] === mnt) ?? '';
    const flags = line.split(' ')[5] ?? '';
    for (const f of ['ro', 'nodev', 'nosuid', 'noexec']) assert.ok(flags.split(',').includes(f), `${f} in ${flags}`);
    assert.throws(
      () => {
        writeFileSync(path.join(mnt, 'etc/new'), 'x');
      },
      { code: 'EROFS' },
    );
    return Promise.resolve(readFileSync(path.join(mnt, 'srv/accounts/passwd'), 'utf8'));
  });
  assert.match(seen, /^app:/);
  assert.deepEqual(await mountPointsUnder(mountsDir(stateDir)), []);
  assert.deepEqual(readdirSync(mountsDir(stateDir)), []);
  // Unmounted also when the reader fails.
  await assert.rejects(
    withReadonlyMount(stateDir, [{ type: 'bind', source: root, options: ['rbind'] }], () => Promise.reject(new Error('reader failed'))),
    /reader failed/,
  );
  assert.deepEqual(await mountPointsUnder(mountsDir(stateDir)), []);
  // A mount that fails leaves no dir behind.
  await assert.rejects(
    withReadonlyMount(stateDir, [{ type: 'bind', source: path.join(root, 'nothere'), options: [] }], () => Promise.resolve(1)),
    { name: 'MountError' },
  );
  assert.deepEqual(readdirSync(mountsDir(stateDir)), []);
});

test('removeStaleMounts: unmounts and removes what a killed agent left under the state dir', async (t) => {
  const { root } = tree(t);
  const stateDir = path.join(path.dirname(root), 'state');
  const left = path.join(mountsDir(stateDir), 'deadbeef');
  mkdirSync(left, { recursive: true });
  execFileSync('mount', ['--bind', '-o', 'ro', root, left]);
  mkdirSync(path.join(mountsDir(stateDir), 'empty'));
  assert.deepEqual(await mountPointsUnder(mountsDir(stateDir)), [left]);
  assert.equal(await removeStaleMounts(stateDir), 1);
  assert.deepEqual(await mountPointsUnder(mountsDir(stateDir)), []);
  assert.deepEqual(readdirSync(mountsDir(stateDir)), []);
  assert.ok(existsSync(path.join(root, 'srv/accounts/passwd')), 'the mounted tree itself is untouched');
  assert.equal(await removeStaleMounts(path.join(stateDir, 'none')), 0);
});

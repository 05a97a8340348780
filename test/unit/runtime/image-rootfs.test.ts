/**
 * Reading image files from the host side without leaving the image: the secure join (symlinks
 * and `..` resolved inside the root, loops refused), the regular-file reader (FIFO, device,
 * directory, oversize refused without blocking), and the read-only temp mount (flags, cleanup,
 * leftovers removed). Runs on a temp directory tree, without root: what needs root (a device
 * node, the mounts) is in test/integration/image-rootfs.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { MAX_SYMLINKS, secureJoin } from '../../../src/runtime/containerd/rootfs/secure-join.js';
import { ImageFileError, readImageFile } from '../../../src/runtime/containerd/rootfs/read-file.js';
import { mountArgs, readonlyMounts } from '../../../src/runtime/containerd/rootfs/readonly-mount.js';

function tree(t: TestContext): { root: string; outside: string } {
  const base = mkdtempSync(path.join(os.tmpdir(), 'esb-rootfs-'));
  t.after(() => {
    rmSync(base, { recursive: true, force: true });
  });
  const root = path.join(base, 'root');
  const outside = path.join(base, 'outside');
  mkdirSync(path.join(root, 'etc'), { recursive: true });
  mkdirSync(path.join(root, 'srv/accounts'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(path.join(outside, 'passwd'), 'canary:x:4242:4242::/:/bin/sh\n');
  writeFileSync(path.join(root, 'srv/accounts/passwd'), 'app:x:1000:1000::/:/bin/sh\n');
  return { root, outside };
}

test('secureJoin: absolute and relative links, `..` clamped at the root', async (t) => {
  const { root, outside } = tree(t);
  const e = (p: string): string => path.join(root, p);
  symlinkSync('/srv/accounts/passwd', e('etc/abs'));
  symlinkSync('../srv/accounts/passwd', e('etc/rel'));
  symlinkSync(outside + '/passwd', e('etc/host'));
  symlinkSync('../../../../../../../../..' + outside + '/passwd', e('etc/dotdot'));
  symlinkSync('/srv', e('srvlink'));
  assert.equal(await secureJoin(root, '/etc/abs'), e('srv/accounts/passwd'));
  assert.equal(await secureJoin(root, 'etc/rel'), e('srv/accounts/passwd'));
  assert.equal(await secureJoin(root, '/srvlink/accounts/passwd'), e('srv/accounts/passwd'), 'a link in the middle of the path');
  assert.equal(await secureJoin(root, '/etc/host'), e(outside + '/passwd'), 'an absolute link starts again at the root');
  assert.equal(await secureJoin(root, '/etc/dotdot'), e(outside + '/passwd'), '`..` stops at the root');
  assert.equal(await secureJoin(root, '/../../../etc/passwd'), e('etc/passwd'));
  assert.equal(await secureJoin(root, '/nothere/../etc/./passwd'), e('etc/passwd'));
  assert.equal(await secureJoin(root, '/'), root);
});

test('secureJoin: a loop or a chain of more than MAX_SYMLINKS links is refused', async (t) => {
  const { root } = tree(t);
  symlinkSync('b', path.join(root, 'etc/a'));
  symlinkSync('a', path.join(root, 'etc/b'));
  await assert.rejects(secureJoin(root, '/etc/a'), { name: 'SymlinkLoopError' });
  symlinkSync('/srv/accounts/passwd', path.join(root, 'l0'));
  for (let i = 1; i <= MAX_SYMLINKS; i++) symlinkSync(`/l${i - 1}`, path.join(root, `l${i}`));
  assert.equal(await secureJoin(root, `/l${MAX_SYMLINKS - 1}`), path.join(root, 'srv/accounts/passwd'), 'MAX_SYMLINKS links are fine');
  await assert.rejects(secureJoin(root, `/l${MAX_SYMLINKS}`), { name: 'SymlinkLoopError' });
});

test('readImageFile: reads inside the root only; never opens a FIFO; bounded size', async (t) => {
  const { root, outside } = tree(t);
  const e = (p: string): string => path.join(root, p);
  symlinkSync('/srv/accounts/passwd', e('etc/passwd'));
  assert.equal((await readImageFile(root, '/etc/passwd', 1024))?.toString(), 'app:x:1000:1000::/:/bin/sh\n');

  symlinkSync(outside + '/passwd', e('etc/host'));
  symlinkSync('../../../../../../../../..' + outside + '/passwd', e('etc/dotdot'));
  assert.equal(await readImageFile(root, '/etc/host', 1024), undefined, 'the host canary is not reachable');
  assert.equal(await readImageFile(root, '/etc/dotdot', 1024), undefined);
  assert.equal(await readImageFile(root, '/etc/group', 1024), undefined);
  assert.equal(await readImageFile(root, '/srv/accounts/passwd/x', 1024), undefined, 'a file used as a directory is missing');

  execFileSync('mkfifo', [e('etc/fifo')]);
  const refused = async (file: string, kind: string, detail: RegExp): Promise<void> => {
    const t0 = Date.now();
    await assert.rejects(readImageFile(root, file, 1024), (err: unknown) => {
      assert.ok(err instanceof ImageFileError, String(err));
      assert.equal(err.problem.kind, kind, file);
      assert.match(err.problem.detail, detail, file);
      assert.doesNotMatch(err.message, /canary|app:x/, 'no file content in the error');
      return true;
    });
    assert.ok(Date.now() - t0 < 2000, `${file} answered at once`);
  };
  await refused('/etc/fifo', 'not-regular', /FIFO/);
  await refused('/etc', 'not-regular', /directory/);
  symlinkSync('loop', e('etc/loop'));
  await refused('/etc/loop', 'symlink-loop', /symlinks/);
  writeFileSync(e('etc/big'), Buffer.alloc(1025, 0x41));
  await refused('/etc/big', 'too-large', /1024/);
  writeFileSync(e('etc/exact'), Buffer.alloc(1024, 0x41));
  assert.equal((await readImageFile(root, '/etc/exact', 1024))?.length, 1024);
});

test('readonlyMounts: overlay upper becomes the top lower dir, work dir dropped; others get ro; all nodev,nosuid,noexec', () => {
  const overlay = readonlyMounts([
    { type: 'overlay', source: 'overlay', options: ['index=off', 'workdir=/s/2/work', 'upperdir=/s/2/fs', 'lowerdir=/s/1/fs:/s/0/fs'] },
  ]);
  assert.deepEqual(overlay, [
    { type: 'overlay', source: 'overlay', options: ['index=off', 'lowerdir=/s/2/fs:/s/1/fs:/s/0/fs', 'ro', 'nodev', 'nosuid', 'noexec'] },
  ]);
  const bind = readonlyMounts([{ type: 'bind', source: '/s/3/fs', options: ['rbind', 'rw'] }]);
  assert.deepEqual(bind, [{ type: 'bind', source: '/s/3/fs', options: ['ro', 'nodev', 'nosuid', 'noexec'] }]);
  assert.deepEqual(mountArgs(bind[0]!, '/t').args, ['--bind', '-o', 'ro,nodev,nosuid,noexec', '--', '/s/3/fs', '/t']);
  const ext4 = readonlyMounts([{ type: 'ext4', source: '/dev/mapper/x', options: ['rw', 'discard'] }]);
  assert.deepEqual(mountArgs(ext4[0]!, '/t').args, ['-t', 'ext4', '-o', 'discard,ro,nodev,nosuid,noexec', '--', '/dev/mapper/x', '/t']);
  // Too many layers for one page of mount data: relative to their common parent.
  const many = Array.from({ length: 120 }, (_, i) => `/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/${i}/fs`);
  const long = mountArgs(readonlyMounts([{ type: 'overlay', source: 'overlay', options: [`lowerdir=${many.join(':')}`] }])[0]!, '/t');
  assert.equal(long.cwd, '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots');
  assert.ok(long.args[3]!.startsWith('lowerdir=0/fs:1/fs:'), long.args[3]);
});

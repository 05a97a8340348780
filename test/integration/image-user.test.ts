/**
 * The image's USER is looked up in the image's own /etc/passwd and /etc/group, on real
 * containerd, runc, CNI and registry: hostile images whose /etc/passwd points at a host file
 * (absolute link, `..` chain), is a FIFO, points at a character device, or is 50 MiB are
 * refused at once with INVALID_ARGUMENT, leave nothing behind and do not stall the agent; a
 * `name:group` USER through a symlink inside the image resolves, as `id` inside the worker
 * shows; the same on the `native` snapshotter; a temp mount left by a killed agent is removed
 * at start-up.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { mountPointsUnder, mountsDir } from '../../src/runtime/containerd/rootfs/readonly-mount.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import { pushUserImage, type UserImageEntry } from '../harness/user-images.js';
import type { WorkerReply as Worker } from '../helpers/replies.js';

const OWNER = 'image-user';
/** What the hostile images' canary passwd would give the worker, were it read. */
const CANARY_ID = 4242;
/** How long a refused Ensure may take (pull included). */
const ANSWER_MS = 5000;

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The host canary: a passwd and group naming the images' USER, at a path unique to this run. */
function makeCanary(): string {
  const dir = `/tmp/esb-canary-${randomBytes(6).toString('hex')}`;
  mkdirSync(dir, { mode: 0o755 });
  writeFileSync(path.join(dir, 'passwd'), `app:x:${CANARY_ID}:${CANARY_ID}::/:/bin/sh\n`);
  writeFileSync(path.join(dir, 'group'), `app:x:${CANARY_ID}:\n`);
  return dir;
}

const DOTDOT = '../'.repeat(16).slice(0, -1);

function hostileImages(canary: string): Record<string, { entries: UserImageEntry[]; detail: RegExp }> {
  return {
    'passwd-abs-link': {
      entries: [
        { type: 'symlink', name: 'etc/passwd', target: `${canary}/passwd` },
        { type: 'symlink', name: 'etc/group', target: `${canary}/group` },
      ],
      detail: /USER "app": the user needs the image's \/etc\/passwd, and there is none/,
    },
    'passwd-dotdot': {
      entries: [
        { type: 'symlink', name: 'etc/passwd', target: `${DOTDOT}${canary}/passwd` },
        { type: 'symlink', name: 'etc/group', target: `${DOTDOT}${canary}/group` },
      ],
      detail: /USER "app": the user needs the image's \/etc\/passwd, and there is none/,
    },
    'passwd-fifo': { entries: [{ type: 'fifo', name: 'etc/passwd' }], detail: /\/etc\/passwd is a FIFO, not a regular file/ },
    'passwd-dev-zero': {
      entries: [
        { type: 'char-device', name: 'dev/zero', major: 1, minor: 5 },
        { type: 'symlink', name: 'etc/passwd', target: '/dev/zero' },
      ],
      detail: /\/etc\/passwd is a character device, not a regular file/,
    },
    'passwd-50mib': {
      entries: [
        {
          type: 'file',
          name: 'etc/passwd',
          data: Buffer.concat([Buffer.from('app:x:1000:1000::/:/bin/sh\n'), Buffer.alloc(50 * 1024 * 1024, '#\n')]),
        },
      ],
      detail: /\/etc\/passwd is larger than 1048576 bytes/,
    },
  };
}

/** A `name:group` USER through a symlink that stays inside the image. */
const NAMED_IMAGE: UserImageEntry[] = [
  { type: 'file', name: 'srv/accounts/passwd', data: 'root:x:0:0:root:/root:/bin/sh\napp:x:4321:4321::/worker:/bin/sh\n' },
  { type: 'symlink', name: 'etc/passwd', target: '../srv/accounts/passwd' },
  { type: 'file', name: 'etc/group', data: 'root:x:0:\nstaff:x:4300:\napp:x:4321:\nextra:x:4400:other,app\n' },
];

async function expectNoLeaks(stack: TestStack, what: string): Promise<void> {
  const leaks = await stack.leaks();
  assert.equal(leakCount(leaks), 0, `${what} left: ${JSON.stringify(leaks)}`);
}

async function invoke<T>(stack: TestStack, id: string, payload: object): Promise<T> {
  const r = await stack.call<{ status_code: number; body: Buffer }>(
    'InvokeWorker',
    { container_id: id, owner_id: OWNER, path: '', payload: Buffer.from(JSON.stringify(payload)), headers: {}, timeout_ms: 20_000 },
    { deadlineMs: 25_000 },
  );
  assert.equal(r.status_code, 200, r.body.toString());
  return JSON.parse(r.body.toString('utf8')) as T;
}

async function ensure(stack: TestStack, t: TestContext, fn: string, image: string): Promise<Worker> {
  const w = await stack.call<Worker>('EnsureContainer', { function_name: fn, image, env: {}, owner_id: OWNER });
  t.after(() => stack.call('DestroyContainer', { container_id: w.id, owner_id: OWNER }));
  return w;
}

/** `id` inside a worker of `image` (USER app:staff) shows the image's ids, not root's or the canary's. */
async function checkNamedUser(stack: TestStack, t: TestContext, image: string): Promise<void> {
  const w = await ensure(stack, t, 'named-user', image);
  const r = await invoke<ExecResult>(stack, w.id, { action: 'exec', argv: ['/bin/id'] });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^uid=4321\(app\) gid=4300\(staff\) groups=/, r.stdout);
  const groups = (/groups=(\S+)/.exec(r.stdout)?.[1] ?? '')
    .split(',')
    .map((g) => Number.parseInt(g, 10))
    .sort();
  assert.deepEqual(groups, [4300, 4400], r.stdout);
}

function removeCanary(canary: string): void {
  rmSync(canary, { recursive: true, force: true });
}

describe('image USER resolved inside the image (overlayfs)', () => {
  let stack: TestStack;
  let canary: string;
  const hostile = new Map<string, { ref: string; detail: RegExp }>();
  let named: string;

  before(async () => {
    canary = makeCanary();
    stack = await startStack();
    for (const [name, h] of Object.entries(hostileImages(canary))) {
      hostile.set(name, {
        ref: await pushUserImage(
          stack.registry,
          stack.images.images.worker,
          { name, user: 'app', entries: h.entries },
          path.join(stack.tmp, 'user-images'),
        ),
        detail: h.detail,
      });
    }
    named = await pushUserImage(
      stack.registry,
      stack.images.images.worker,
      { name: 'named-user', user: 'app:staff', entries: NAMED_IMAGE },
      path.join(stack.tmp, 'user-images'),
    );
  });
  after(async () => {
    await stack.stop();
    removeCanary(canary);
  });

  test('hostile /etc/passwd images are refused at once, never with the canary ids, leaving nothing behind', async () => {
    for (const [name, h] of hostile) {
      // Pull first, so the timing below is the lookup's alone.
      const t0 = Date.now();
      const err = await stack.callError(
        'EnsureContainer',
        { function_name: name, image: h.ref, env: {}, owner_id: OWNER },
        { deadlineMs: 120_000 },
      );
      const pulled = Date.now() - t0;
      assert.equal(err.name, 'INVALID_ARGUMENT', `${name}: ${err.details}`);
      assert.match(err.details, h.detail, name);
      assert.ok(err.details.includes(h.ref), `${name}: the message names the image: ${err.details}`);
      assert.ok(
        !err.details.includes(String(CANARY_ID)) && !err.details.includes(canary),
        `${name}: nothing of the host canary: ${err.details}`,
      );
      const t1 = Date.now();
      const again = await stack.callError(
        'EnsureContainer',
        { function_name: name, image: h.ref, env: {}, owner_id: OWNER },
        { deadlineMs: ANSWER_MS },
      );
      assert.equal(again.name, 'INVALID_ARGUMENT', `${name} (image local): ${again.details}`);
      assert.ok(Date.now() - t1 < ANSWER_MS, `${name} answered within ${ANSWER_MS} ms (first try, with the pull: ${pulled} ms)`);
      const listed = await stack.call<{ containers: unknown[] }>('ListContainers', { owner_id: OWNER });
      assert.deepEqual(listed.containers, [], `${name}: no worker, not even half-made`);
      await expectNoLeaks(stack, name);
    }
  });

  test('five hostile Ensures at once, then a normal Ensure + Invoke: the agent does not stall', async (t) => {
    const t0 = Date.now();
    const results = await Promise.all(
      [...hostile.values()].map((h, i) =>
        stack.callError(
          'EnsureContainer',
          { function_name: `par-${i}`, image: h.ref, env: {}, owner_id: OWNER },
          { deadlineMs: ANSWER_MS },
        ),
      ),
    );
    for (const r of results) assert.equal(r.name, 'INVALID_ARGUMENT', r.details);
    assert.ok(Date.now() - t0 < ANSWER_MS, `five refusals took ${Date.now() - t0} ms`);
    await expectNoLeaks(stack, 'five hostile Ensures');
    const w = await ensure(stack, t, 'after-hostile', stack.images.worker);
    const r = await invoke<ExecResult>(stack, w.id, { action: 'exec', argv: ['/bin/id', '-u'] });
    assert.equal(r.stdout.trim(), '0', 'the plain worker image has no USER: root');
  });

  test('name:group USER through a symlink inside the image: the worker runs as the image says; repeats pay no mount', async (t) => {
    await checkNamedUser(stack, t, named);
    const lookups = (): number =>
      stack.logs.find('image user lookup: reading /etc/passwd and /etc/group from a read-only mount of the snapshot').length;
    const before = lookups();
    assert.ok(before >= 1, 'the first Ensure mounted the snapshot');
    const w = await ensure(stack, t, 'named-user-2', named);
    const r = await invoke<ExecResult>(stack, w.id, { action: 'exec', argv: ['/bin/id', '-u'] });
    assert.equal(r.stdout.trim(), '4321');
    assert.equal(lookups(), before, 'the second Ensure of the same image used the cached ids');
    assert.deepEqual(await mountPointsUnder(stack.stateDir), [], 'no mount stays');
  });

  test('a temp mount left by a killed agent is unmounted at start-up', async () => {
    await expectNoLeaks(stack, 'before the restart');
    await stack.stopAgent();
    const left = path.join(mountsDir(stack.stateDir), `crash-${randomBytes(4).toString('hex')}`);
    mkdirSync(left, { recursive: true });
    const src = path.join(stack.tmp, 'left-mount-src');
    mkdirSync(src, { recursive: true });
    execFileSync('mount', ['--bind', '-o', 'ro', src, left]);
    try {
      assert.equal((await stack.leaks()).mounts.length, 1, 'the leak check sees the mount');
      await stack.startAgent();
      assert.deepEqual(await mountPointsUnder(stack.stateDir), []);
      assert.deepEqual(readdirSync(mountsDir(stack.stateDir)), []);
      assert.ok(stack.logs.find('unmounted image root filesystems an earlier run left mounted').length >= 1);
      await expectNoLeaks(stack, 'after the restart');
    } finally {
      try {
        execFileSync('umount', ['-l', left], { stdio: 'ignore' });
      } catch {
        // already unmounted by the agent
      }
      if (!stack.agent) await stack.startAgent();
    }
  });
});

describe('image USER resolved inside the image (native snapshotter)', () => {
  let stack: TestStack;
  let canary: string;

  before(async () => {
    canary = makeCanary();
    stack = await startStack({ env: { CONTAINERD_SNAPSHOTTER: 'native' } });
  });
  after(async () => {
    await stack.stop();
    removeCanary(canary);
  });

  test('name:group USER resolves and a host-pointing /etc/passwd is refused on native too', async (t) => {
    assert.equal(stack.snapshotter, 'native');
    const dir = path.join(stack.tmp, 'user-images');
    const named = await pushUserImage(
      stack.registry,
      stack.images.images.worker,
      { name: 'named-user', user: 'app:staff', entries: NAMED_IMAGE },
      dir,
    );
    await t.test('named user', async (tt) => {
      await checkNamedUser(stack, tt, named);
      const records = (await stack.containerd.call('containers', 'List', { filters: [] })).containers;
      assert.deepEqual(
        records.map((c) => c.snapshotter),
        ['native'],
        'the worker rootfs is a native snapshot',
      );
    });
    await expectNoLeaks(stack, 'native named user');
    for (const name of ['passwd-abs-link', 'passwd-dotdot', 'passwd-fifo'] as const) {
      const h = hostileImages(canary)[name]!;
      const ref = await pushUserImage(stack.registry, stack.images.images.worker, { name, user: 'app', entries: h.entries }, dir);
      const err = await stack.callError(
        'EnsureContainer',
        { function_name: name, image: ref, env: {}, owner_id: OWNER },
        { deadlineMs: 120_000 },
      );
      assert.equal(err.name, 'INVALID_ARGUMENT', `${name}: ${err.details}`);
      assert.match(err.details, h.detail, name);
      assert.ok(!err.details.includes(String(CANARY_ID)), err.details);
      await expectNoLeaks(stack, `native ${name}`);
    }
  });
});

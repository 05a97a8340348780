import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_PATH, buildWorkerSpec, defaultSpec, withEnv, withImageConfig } from '../../../src/runtime/containerd/spec/spec.js';
import { DENIED_SYSCALLS, defaultSeccompProfile } from '../../../src/worker/seccomp.js';
import { numericUser, resolveUser, safeUserText } from '../../../src/runtime/containerd/spec/users.js';
import {
  DEFAULT_CAPABILITIES,
  DROPPED_CAPABILITIES,
  cpuSharesForMemory,
  cpuWeightForShares,
  memoryMbFor,
  WORKER_NOFILE,
  WORKER_PIDS_LIMIT,
} from '../../../src/worker/limits.js';

const base = {
  namespace: 'esb',
  id: 'esb-default-fn-00000001',
  image: { Entrypoint: ['/usr/bin/node'], Cmd: ['/w.mjs'], Env: ['PATH=/bin', 'A=image'], WorkingDir: '/w' },
  user: { uid: 0, gid: 0, additionalGids: [0] },
  env: ['A=request', 'B=2'],
  memoryMb: 256,
  cgroupVersion: 1 as const,
  cgroupDriver: 'cgroupfs' as const,
  readonlyRootfs: true,
  tmpSizeMb: 512,
  netnsPath: '/run/netns/esb-default-fn-00000001',
  resolvConfPath: '/s/resolv.conf',
  hostsPath: '/s/hosts',
  hostname: 'esb-default-fn-00000001',
};

test('defaultSpec matches containerd client defaults', () => {
  const s = defaultSpec('ns', 'id1');
  assert.deepEqual(s.process.capabilities.bounding, DEFAULT_CAPABILITIES);
  // containerd's 14 less CAP_NET_RAW (no forged packets on the shared bridge).
  assert.equal(DEFAULT_CAPABILITIES.length, 13);
  assert.ok(!DEFAULT_CAPABILITIES.includes('CAP_NET_RAW'));
  assert.deepEqual(DROPPED_CAPABILITIES, ['CAP_NET_RAW']);
  assert.equal(s.process.noNewPrivileges, true);
  assert.deepEqual(s.process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: WORKER_NOFILE, soft: WORKER_NOFILE }]);
  assert.equal(s.linux.cgroupsPath, '/ns/id1');
  assert.deepEqual(
    s.linux.namespaces.map((n) => n.type),
    ['pid', 'ipc', 'uts', 'mount', 'network'],
  );
  assert.ok(s.linux.maskedPaths.includes('/proc/kcore'));
  assert.ok(s.linux.readonlyPaths.includes('/proc/sys'));
  assert.equal(s.mounts.length, 7);
});

test('hardening (issue 6 §5): every worker spec masks and write-protects /proc, limits memory and pids, adds no capability', () => {
  for (const memoryMb of [16, 128, 262_144]) {
    const s = buildWorkerSpec({ ...base, memoryMb });
    assert.equal(s.linux.resources.memory?.limit, memoryMb * 1024 * 1024, 'memory limit always set, to the request');
    assert.equal(s.linux.resources.pids?.limit, WORKER_PIDS_LIMIT);
    assert.equal(s.process.noNewPrivileges, true);
    for (const set of [s.process.capabilities.bounding, s.process.capabilities.effective, s.process.capabilities.permitted]) {
      assert.deepEqual([...set].sort(), [...DEFAULT_CAPABILITIES].sort());
    }
    assert.ok(!DEFAULT_CAPABILITIES.includes('CAP_SYS_ADMIN') && !DEFAULT_CAPABILITIES.includes('CAP_NET_ADMIN'));
    assert.equal(s.linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
    assert.deepEqual([...s.linux.maskedPaths].sort(), [
      '/proc/acpi',
      '/proc/asound',
      '/proc/kcore',
      '/proc/keys',
      '/proc/latency_stats',
      '/proc/sched_debug',
      '/proc/scsi',
      '/proc/timer_list',
      '/proc/timer_stats',
      '/sys/devices/virtual/powercap',
      '/sys/firmware',
    ]);
    assert.deepEqual([...s.linux.readonlyPaths].sort(), ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']);
    // Own namespaces for everything but the user namespace; the network one is the worker's netns.
    assert.deepEqual(s.linux.namespaces.map((n) => n.type).sort(), ['ipc', 'mount', 'network', 'pid', 'uts']);
    assert.ok(
      s.linux.namespaces.every((n) => (n.type === 'network' ? n.path === base.netnsPath : n.path === undefined)),
      'no host namespace joined',
    );
    assert.ok(s.mounts.find((m) => m.destination === '/sys')?.options.includes('ro'), '/sys is read-only');
  }
});

test('buildWorkerSpec: image config, then request env wins, limits, netns, files, seccomp', () => {
  const s = buildWorkerSpec(base);
  assert.deepEqual(s.process.args, ['/usr/bin/node', '/w.mjs']);
  assert.equal(s.process.cwd, '/w');
  assert.deepEqual(s.process.env, ['PATH=/bin', 'A=request', 'B=2']);
  assert.equal(s.linux.resources.memory?.limit, 256 * 1024 * 1024);
  assert.equal(s.linux.resources.pids?.limit, WORKER_PIDS_LIMIT);
  assert.ok((s.linux.resources.cpu?.shares ?? 0) >= 2);
  assert.deepEqual(
    s.linux.namespaces.find((n) => n.type === 'network'),
    { type: 'network', path: base.netnsPath },
  );
  assert.deepEqual(
    s.mounts.filter((m) => m.type === 'bind').map((m) => [m.destination, m.source, m.options.join(',')]),
    [
      ['/etc/resolv.conf', '/s/resolv.conf', 'rbind,ro'],
      ['/etc/hosts', '/s/hosts', 'rbind,ro'],
    ],
  );
  assert.equal(s.linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
  assert.ok(s.linux.seccomp.syscalls[0]?.names.includes('read'));
  assert.equal(s.hostname, base.hostname);
});

test('cgroup v1: cpu.shares only, no swap limit, no unified (runc rejects both there)', () => {
  const s = buildWorkerSpec(base);
  assert.deepEqual(s.linux.resources.memory, { limit: 256 * 1024 * 1024 });
  assert.equal(s.linux.resources.unified, undefined);
  assert.equal(s.linux.resources.cpu?.shares, cpuSharesForMemory(256));
});

test('cgroup v2: memory.swap equals the limit (no swap past it) and an explicit cpu.weight', () => {
  const s = buildWorkerSpec({ ...base, cgroupVersion: 2 });
  assert.deepEqual(s.linux.resources.memory, { limit: 256 * 1024 * 1024, swap: 256 * 1024 * 1024 });
  assert.equal(s.linux.resources.unified?.['cpu.weight'], String(cpuWeightForShares(cpuSharesForMemory(256))));
  assert.equal(s.linux.resources.cpu?.shares, cpuSharesForMemory(256));
});

test('cpu.weight from shares: the log-quadratic formula of current runc and crun', () => {
  // Fixed points of the formula: the minimum, the default weight, the maximum.
  assert.equal(cpuWeightForShares(2), 1);
  assert.equal(cpuWeightForShares(1024), 100);
  assert.equal(cpuWeightForShares(262_144), 10_000);
  // Lambda's sizes: 128 MiB → 74 shares, 1769 MiB → one CPU's 1024 shares.
  assert.equal(cpuSharesForMemory(1769), 1024);
  let prev = 0;
  for (let shares = 2; shares <= 262_144; shares *= 2) {
    const w = cpuWeightForShares(shares);
    assert.ok(w >= 1 && w <= 10_000 && w >= prev, `monotonic in range at ${shares}: ${w}`);
    prev = w;
  }
});

test('image without Env gets the default PATH; empty args are refused', () => {
  const s = defaultSpec('n', 'i');
  withImageConfig({ Cmd: ['/bin/sh'] }, { uid: 0, gid: 0 })(s);
  assert.deepEqual(s.process.env, [DEFAULT_PATH]);
  assert.throws(
    () => {
      withImageConfig({}, { uid: 0, gid: 0 })(defaultSpec('n', 'i'));
    },
    { code: 'INVALID_ARGUMENT' },
  );
});

test('withEnv replaces by key and appends new keys', () => {
  const s = defaultSpec('n', 'i');
  s.process.env = ['A=1', 'AB=2'];
  withEnv(['A=3', 'C=4', 'EMPTY='])(s);
  assert.deepEqual(s.process.env, ['A=3', 'AB=2', 'C=4', 'EMPTY=']);
});

test('seccomp: clone namespace mask and clone3 ENOSYS without CAP_SYS_ADMIN', () => {
  const p = defaultSeccompProfile(DEFAULT_CAPABILITIES, 'x64');
  assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  const clone = p.syscalls.find((r) => r.names[0] === 'clone');
  const arg = clone?.args?.[0];
  assert.ok(arg);
  assert.equal(arg.op, 'SCMP_CMP_MASKED_EQ');
  assert.equal(arg.value, 0x7e020000);
  assert.equal(p.syscalls.find((r) => r.names[0] === 'clone3')?.errnoRet, 38);
  assert.ok(
    p.syscalls.some((r) => r.names.includes('chroot')),
    'CAP_SYS_CHROOT unlocks chroot',
  );
  assert.ok(!p.syscalls.some((r) => r.names.includes('mount')), 'mount needs CAP_SYS_ADMIN');
  assert.ok(p.syscalls[0]!.names.length > 300);
});

test('seccomp: io_uring is not allowed by any rule (the default action answers EPERM)', () => {
  assert.deepEqual([...DENIED_SYSCALLS].sort(), ['io_uring_enter', 'io_uring_register', 'io_uring_setup']);
  for (const caps of [DEFAULT_CAPABILITIES, [...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN']]) {
    const p = defaultSeccompProfile(caps, 'x64');
    for (const r of p.syscalls) {
      for (const name of DENIED_SYSCALLS) assert.ok(!(r.action === 'SCMP_ACT_ALLOW' && r.names.includes(name)), `${name} allowed`);
    }
    assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
  }
});

test('filesystem: read-only root and a sized /tmp tmpfs by default; the opt-out keeps /tmp', () => {
  const ro = buildWorkerSpec(base);
  assert.equal(ro.root.readonly, true);
  const tmp = ro.mounts.filter((m) => m.destination === '/tmp');
  assert.equal(tmp.length, 1);
  assert.equal(tmp[0]!.type, 'tmpfs');
  assert.deepEqual(tmp[0]!.options, ['nosuid', 'nodev', 'exec', 'mode=1777', 'size=512m']);
  const rw = buildWorkerSpec({ ...base, readonlyRootfs: false, tmpSizeMb: 64 });
  assert.equal(rw.root.readonly, false);
  assert.ok(rw.mounts.find((m) => m.destination === '/tmp')?.options.includes('size=64m'));
  // The per-worker files stay read-only binds over the read-only root.
  assert.ok(ro.mounts.filter((m) => m.type === 'bind').every((m) => m.options.includes('ro')));
});

test('memoryMbFor: request env, default, and bad values', () => {
  assert.equal(memoryMbFor({}, 128), 128);
  assert.equal(memoryMbFor({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512' }, 128), 512);
  for (const bad of ['abc', '-1', '0', '1.5', '', '99999999999', '15']) {
    assert.throws(() => memoryMbFor({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: bad }, 128), { code: 'INVALID_ARGUMENT' }, bad);
  }
});

test('resolveUser: names, uids and groups from the account files, containerd rules', () => {
  const files = {
    passwd: 'root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/app:/bin/sh\n# comment\nbad:x:notanumber:1::/:/bin/sh\n',
    group: 'root:x:0:\napp:x:1002:\nextra:x:2000:app,other\n',
  };
  const img = 'registry.test/fn:v1';
  assert.deepEqual(resolveUser('app', files, img), { uid: 1001, gid: 1002, additionalGids: [1002, 2000] });
  assert.deepEqual(resolveUser('', files, img), { uid: 0, gid: 0, additionalGids: [0] });
  assert.deepEqual(resolveUser(undefined, files, img), { uid: 0, gid: 0, additionalGids: [0] });
  assert.deepEqual(resolveUser('1234:99', files, img), { uid: 1234, gid: 99, additionalGids: [99] });
  assert.deepEqual(resolveUser('4321', files, img), { uid: 4321, gid: 0, additionalGids: [0] });
  assert.deepEqual(resolveUser('1001', files, img), { uid: 1001, gid: 1002, additionalGids: [1002, 2000] });
  assert.deepEqual(resolveUser('app:extra', files, img), { uid: 1001, gid: 2000, additionalGids: [2000] });
  assert.deepEqual(resolveUser('app:77', files, img), { uid: 1001, gid: 77, additionalGids: [77, 2000] });
  assert.deepEqual(resolveUser('55:extra', files, img), { uid: 55, gid: 2000, additionalGids: [2000] });
  assert.throws(() => resolveUser('ghost', files, img), {
    code: 'INVALID_ARGUMENT',
    message: /registry\.test\/fn:v1.*"ghost".*not in the image's \/etc\/passwd/,
  });
  assert.throws(() => resolveUser('app:ghosts', files, img), { code: 'INVALID_ARGUMENT', message: /not in the image's \/etc\/group/ });
  assert.throws(() => resolveUser('bad', files, img), { code: 'INVALID_ARGUMENT' }, 'an entry with a non-numeric uid does not count');
  assert.throws(() => resolveUser('app', { passwd: undefined, group: undefined }, img), {
    code: 'INVALID_ARGUMENT',
    message: /needs the image's \/etc\/passwd, and there is none/,
  });
  assert.throws(() => resolveUser(':0', files, img), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => resolveUser('99999999999', files, img), { code: 'INVALID_ARGUMENT', message: /out of range/ });
});

test('numericUser: blank and uid:gid need no files; anything else does', () => {
  assert.deepEqual(numericUser(''), { uid: 0, gid: 0, additionalGids: [0] });
  assert.deepEqual(numericUser('  '), { uid: 0, gid: 0, additionalGids: [0] });
  assert.deepEqual(numericUser('10:20'), { uid: 10, gid: 20, additionalGids: [20] });
  for (const u of ['10', 'app', 'app:20', '10:grp']) assert.equal(numericUser(u), undefined, u);
});

test('safeUserText: an image-controlled USER is cut short and stripped in messages', () => {
  assert.equal(safeUserText('app:staff'), 'app:staff');
  assert.equal(safeUserText('a\nb"c\u001b[31m'), 'a?b?c??31m');
  assert.ok(safeUserText('x'.repeat(500)).length <= 65);
});

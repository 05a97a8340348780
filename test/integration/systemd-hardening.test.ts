/**
 * The unit's hardening, proven on this host. systemd is not PID 1 here, so the unit cannot be
 * started as is; instead the agent runs under the unit's own process settings applied by
 * setpriv(1): its CapabilityBoundingSet (also dropped from the inheritable set), NoNewPrivileges
 * and UMask, all read from packaging/systemd/esb-agent.service. Under them it must
 * Ensure, Invoke and Destroy a worker on the real test stack. The seccomp-based settings
 * (SystemCallFilter, RestrictNamespaces, RestrictAddressFamilies, ...) and the device policy
 * need systemd itself and are not exercised here.
 *
 * Also: the score script passes on the unit and fails on the unit without its hardening; and
 * the reason the unit has no mount-namespace settings (ProtectSystem, PrivateTmp, ...): in a
 * mount namespace whose propagation towards the host is off (what systemd sets up for them), a
 * netns made by `ip netns add` is not visible to the host, so runc could not join it.
 *
 * Network: 127.0.0.1 (agent, registry) and, through the agent, this stack's worker.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { freePort, startDaemon, stopDaemon, waitFor, type Daemon } from '../harness/process.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import { agentClient, unaryCall } from '../helpers/grpc.js';

const execFileP = promisify(execFile);
const UNIT = path.join(PROJECT_ROOT, 'packaging/systemd/esb-agent.service');
const NSFS_MAGIC = 0x6e736673;

/** The values of `key=` in the unit's [Service] section (last one wins, like systemd). */
function unitSetting(key: string): string | undefined {
  const lines = readFileSync(UNIT, 'utf8').split('\n');
  let value: string | undefined;
  let inService = false;
  for (const line of lines) {
    if (/^\[.*\]$/.test(line.trim())) inService = line.trim() === '[Service]';
    else if (inService && line.startsWith(`${key}=`)) value = line.slice(key.length + 1).trim();
  }
  return value;
}

/** Capability names of the kernel, bit number → name, from capsh. */
function capabilityMask(names: readonly string[]): bigint {
  const out = execFileSync('capsh', ['--decode=0x3ffffffffff'], { encoding: 'utf8' });
  const all = out
    .slice(out.indexOf('=') + 1)
    .trim()
    .split(',');
  let mask = 0n;
  for (const n of names) {
    const bit = all.indexOf(n.toLowerCase());
    assert.ok(bit >= 0, `unknown capability ${n}`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

function procStatus(pid: number, field: string): string {
  const m = new RegExp(`^${field}:\\s+(\\S+)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `${field} in /proc/${pid}/status`);
  return m[1]!;
}

test('scripts/systemd-security.sh: the unit is at or below 6.5; without its hardening it fails', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-unit-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const { stdout } = await execFileP('bash', [path.join(PROJECT_ROOT, 'scripts/systemd-security.sh')]);
  const score = Number(/^exposure (\d+\.\d) \(target <= 6\.5\)/m.exec(stdout)?.[1]);
  assert.ok(score <= 6.5, stdout);
  console.log(`systemd exposure: ${score}`);

  const unit = readFileSync(UNIT, 'utf8');
  const bare = unit.slice(0, unit.indexOf('# --- Hardening'));
  const barePath = path.join(dir, 'esb-agent.service');
  writeFileSync(barePath, `${bare}\n[Install]\nWantedBy=multi-user.target\n`);
  const failed = await execFileP('bash', [path.join(PROJECT_ROOT, 'scripts/systemd-security.sh'), barePath]).then(
    () => undefined,
    (err: unknown) => err as { code: number; stderr: string },
  );
  assert.equal(failed?.code, 1);
  assert.match(failed.stderr, /exposure \d+\.\d is above 6\.5/);
});

test('why no mount-namespace settings: a netns made in a namespace without propagation to the host is invisible to the host', async (t) => {
  const name = `esbt-nsprobe-${randomBytes(3).toString('hex')}`;
  const file = `/run/netns/${name}`;
  t.after(() => {
    // The netns itself dies with the unshared process; only the empty mount-point file is left.
    if (existsSync(file)) unlinkSync(file);
  });
  await execFileP('unshare', [
    '--mount',
    '--propagation',
    'slave',
    'sh',
    '-c',
    `ip netns add ${name} && test "$(stat -f -c %T ${file})" = nsfs`,
  ]);
  assert.ok(existsSync(file), 'the file is on the shared /run tmpfs');
  assert.notEqual(statfsSync(file).type, NSFS_MAGIC, 'but the netns bind mount stayed inside the namespace');
});

test(
  "the agent under the unit's CapabilityBoundingSet, NoNewPrivileges and UMask ensures, invokes and destroys a worker",
  { timeout: 5 * 60_000 },
  async (t) => {
    const caps = (unitSetting('CapabilityBoundingSet') ?? '').split(/\s+/).filter((c) => c !== '');
    assert.ok(caps.length > 0 && caps.every((c) => c.startsWith('CAP_')), `CapabilityBoundingSet=${caps.join(' ')}`);
    assert.equal(unitSetting('NoNewPrivileges'), 'yes');
    const umask = unitSetting('UMask');
    assert.equal(umask, '0077');

    const held: { stack?: TestStack; daemon?: Daemon; client?: grpc.Client } = {};
    t.after(async () => {
      held.client?.close();
      if (held.daemon) await stopDaemon(held.daemon);
      await held.stack?.stop();
    });
    const stack = (held.stack = await startStack({ startAgent: false }));
    const port = await freePort();
    const setpriv = [
      '--bounding-set',
      `-all,${caps.map((c) => `+${c.slice(4).toLowerCase()}`).join(',')}`,
      '--inh-caps',
      '-all',
      '--no-new-privs',
    ];
    const env = { ...stack.env, PORT: String(port), AGENT_METRICS_PORT: '0', AGENT_LOG_LEVEL: 'info' };
    const d = (held.daemon = startDaemon(
      'setpriv',
      [...setpriv, 'sh', '-c', `umask ${umask} && exec "$0" --import tsx src/main.ts`, process.execPath],
      path.join(stack.tmp, 'agent.log'),
      { ...env },
    ));
    await waitFor('the hardened agent to serve', () => readFileSync(d.logPath, 'utf8').includes('"esb-agent serving"'), 60_000);

    // The agent process really runs with the unit's limits.
    const pid = d.child.pid!;
    assert.equal(procStatus(pid, 'NoNewPrivs'), '1');
    assert.equal(BigInt(`0x${procStatus(pid, 'CapBnd')}`), capabilityMask(caps));
    assert.equal(BigInt(`0x${procStatus(pid, 'CapEff')}`), capabilityMask(caps));

    const client = (held.client = agentClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()));
    const owner = 'hardened';
    const info = await unaryCall<{ id: string; ip_address: string }>(
      client,
      'EnsureContainer',
      { function_name: 'hardened', image: stack.images.worker, env: {}, owner_id: owner },
      { deadlineMs: 120_000 },
    );
    assert.match(info.ip_address, /^10\.252\.\d+\.\d+$/);
    const res = await unaryCall<{ status_code: number; body: Buffer }>(
      client,
      'InvokeWorker',
      {
        container_id: info.id,
        owner_id: owner,
        path: '',
        payload: Buffer.from('{"action":"echo","hello":"hardened"}'),
        headers: {},
        timeout_ms: 30_000,
      },
      { deadlineMs: 60_000 },
    );
    assert.equal(res.status_code, 200);
    assert.deepEqual(JSON.parse(res.body.toString()), { action: 'echo', hello: 'hardened' });
    // UMask=0077: the agent's own files are private to root, except what a worker (maybe not
    // root) must read through its read-only bind mounts.
    const workerDir = path.join(stack.stateDir, 'workers', info.id);
    assert.equal(statSync(workerDir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(workerDir, 'resolv.conf')).mode & 0o777, 0o644);
    assert.equal(statSync(path.join(workerDir, 'hosts')).mode & 0o777, 0o644);
    assert.deepEqual(await unaryCall(client, 'DestroyContainer', { function_name: 'hardened', container_id: info.id, owner_id: owner }), {
      success: true,
    });
    assert.equal(leakCount(await stack.leaks()), 0);

    // iptables (the generated network's masquerading, portmap) works with these capabilities too.
    await execFileP('setpriv', [...setpriv, 'iptables', '-t', 'nat', '-S']);
  },
);

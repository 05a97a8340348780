/**
 * Host-side bounds on hostile tenants, on real containerd + runc + CNI (issue 12 §4–6):
 * - /tmp is a tmpfs of AGENT_WORKER_TMP_SIZE_MB charged to the worker's memory cgroup: a worker
 *   that fills it gets ENOSPC and nothing else notices; what it keeps there shows in its
 *   memory metrics; AGENT_WORKER_READONLY_ROOTFS=false opens the image for writing;
 * - AGENT_MAX_WORKERS and AGENT_MAX_TOTAL_MEMORY_MB answer RESOURCE_EXHAUSTED, also to a burst
 *   of concurrent Ensures, and leave nothing half-made;
 * - worker directories are 0700 and logs 0600 whatever the state dir's mode;
 * - the idle sweep drops the invoke proxy's connection entry of the workers it destroys;
 * - reconciliation kills processes only in cgroups it can attribute to its own workers.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import { eventually } from '../harness/process.js';
import type { WorkerReply as Worker } from '../helpers/replies.js';

const OWNER = 'tenant-limits';
const MIB = 1024 * 1024;
const TMP_MB = 48;

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}
interface Metrics {
  state: string;
  memory_current: string;
}

describe('tenant limits on real containerd', () => {
  let stack: TestStack;

  before(async () => {
    stack = await startStack({ env: { AGENT_WORKER_TMP_SIZE_MB: String(TMP_MB) } });
  });
  after(async () => {
    await stack.stop();
  });

  async function restartAgent(env: Record<string, string>): Promise<void> {
    await stack.stopAgent();
    await stack.startAgent(env);
  }

  const ensure = (fn: string, env: Record<string, string> = {}): Promise<Worker> =>
    stack.call<Worker>('EnsureContainer', { function_name: fn, image: stack.images.worker, env, owner_id: OWNER });
  const destroy = (id: string): Promise<unknown> => stack.call('DestroyContainer', { container_id: id, owner_id: OWNER });
  const list = async (): Promise<{ container_id: string; status: string }[]> =>
    (await stack.call<{ containers: { container_id: string; status: string }[] }>('ListContainers', { owner_id: OWNER })).containers;

  /** Destroys every worker of OWNER after the test, also when it fails. */
  function cleanWorkers(t: TestContext): void {
    t.after(async () => {
      if (!stack.client) return;
      for (const c of await list()) await destroy(c.container_id);
    });
  }

  async function invoke<T>(id: string, payload: object): Promise<T> {
    const r = await stack.call<{ status_code: number; body: Buffer }>(
      'InvokeWorker',
      { container_id: id, owner_id: OWNER, path: '', payload: Buffer.from(JSON.stringify(payload)), headers: {}, timeout_ms: 30_000 },
      { deadlineMs: 35_000 },
    );
    assert.equal(r.status_code, 200, r.body.toString());
    return JSON.parse(r.body.toString('utf8')) as T;
  }
  const sh = (id: string, script: string): Promise<ExecResult> =>
    invoke<ExecResult>(id, { action: 'exec', argv: ['/bin/sh', '-c', script], timeoutMs: 20_000 });
  const memoryCurrent = async (id: string): Promise<number> =>
    Number((await stack.call<{ metrics: Metrics }>('GetContainerMetrics', { container_id: id, owner_id: OWNER })).metrics.memory_current);

  async function metricValue(name: string, labels = ''): Promise<number> {
    const res = await fetch(`http://127.0.0.1:${stack.agent?.metricsPort}/metrics`);
    const text = await res.text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
    return line === undefined ? 0 : Number(line.split(' ')[1]);
  }

  test('/tmp: a bounded tmpfs charged to the worker; filling it fails inside the worker only', async (t) => {
    cleanWorkers(t);
    const w = await ensure('tl-tmp');
    const before = await memoryCurrent(w.id);
    const fill = await sh(w.id, 'dd if=/dev/urandom of=/tmp/a bs=1M count=32 2>&1 && sync');
    assert.equal(fill.code, 0, fill.stdout + fill.stderr);
    const after = await memoryCurrent(w.id);
    assert.ok(after - before >= 30 * MIB, `/tmp data in the worker's memory: ${before} → ${after}`);

    // Past the tmpfs size: ENOSPC inside the worker.
    const over = await sh(w.id, `dd if=/dev/zero of=/tmp/b bs=1M count=${TMP_MB} 2>&1`);
    assert.notEqual(over.code, 0, 'writing past AGENT_WORKER_TMP_SIZE_MB must fail');
    assert.match(over.stdout + over.stderr, /No space left on device/);
    const df = await sh(w.id, 'df -k /tmp | tail -1');
    assert.match(df.stdout, new RegExp(`\\s${TMP_MB * 1024}\\s`), `df shows a ${TMP_MB} MiB /tmp: ${df.stdout}`);
    // The worker, the agent and other workers carry on.
    assert.equal((await sh(w.id, 'rm /tmp/b; echo ok')).stdout.trim(), 'ok');
    const other = await ensure('tl-tmp-other');
    assert.equal((await sh(other.id, 'ls /tmp | wc -l')).stdout.trim(), '0', "one worker's /tmp is not another's");
  });

  test('AGENT_WORKER_READONLY_ROOTFS=false: the image is writable, /tmp still a sized tmpfs', async (t) => {
    cleanWorkers(t);
    await restartAgent({ AGENT_WORKER_READONLY_ROOTFS: 'false' });
    t.after(() => restartAgent({}));
    const w = await ensure('tl-rw');
    const r = await sh(w.id, 'echo x > /etc/esb-probe && cat /etc/esb-probe && grep " /tmp " /proc/self/mounts');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^x\n/);
    assert.match(r.stdout, new RegExp(`tmpfs /tmp tmpfs \\S*size=${TMP_MB * 1024}k`));
  });

  test('AGENT_MAX_WORKERS: a burst of Ensures admits exactly the limit, the rest RESOURCE_EXHAUSTED, nothing half-made', async (t) => {
    cleanWorkers(t);
    await restartAgent({ AGENT_MAX_WORKERS: '2' });
    t.after(() => restartAgent({}));
    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => ensure(`tl-max-${i}`)));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(ok.length, 2, 'exactly AGENT_MAX_WORKERS workers');
    for (const r of refused) {
      assert.match(String(r.reason), /RESOURCE_EXHAUSTED/);
      assert.match(String(r.reason), /AGENT_MAX_WORKERS=2/);
    }
    assert.equal((await list()).length, 2);
    const containers = (await stack.containerd.call('containers', 'List', { filters: [] })).containers;
    assert.equal(containers.length, 2, 'no container of a refused Ensure');
    assert.equal(await metricValue('esb_agent_admission_refused_total', '{limit="workers"}'), 3);
    // Room again after a destroy.
    const first = ok[0]!;
    await destroy(first.value.id);
    await destroy((await ensure('tl-max-again')).id);
  });

  test("AGENT_MAX_TOTAL_MEMORY_MB: the sum of running workers' limits; a stopped worker holds none", async (t) => {
    cleanWorkers(t);
    await restartAgent({ AGENT_MAX_TOTAL_MEMORY_MB: '300' });
    t.after(() => restartAgent({}));
    const a = await ensure('tl-mem-a'); // 128 MiB (the default)
    await ensure('tl-mem-b'); // 256 MiB in all
    const e = await stack.callError('EnsureContainer', { function_name: 'tl-mem-c', image: stack.images.worker, env: {}, owner_id: OWNER });
    assert.equal(e.name, 'RESOURCE_EXHAUSTED', e.details);
    assert.match(e.details, /AGENT_MAX_TOTAL_MEMORY_MB=300/);
    assert.match(e.details, /384 MiB/);
    // A smaller one still fits (288 MiB).
    await ensure('tl-mem-small', { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '32' });
    // Worker a exits: its memory is free again although it is still listed (STOPPED).
    await stack.call('InvokeWorker', {
      container_id: a.id,
      owner_id: OWNER,
      path: '',
      payload: Buffer.from('{"action":"exit","code":3}'),
      headers: {},
      timeout_ms: 10_000,
    });
    await eventually('worker a STOPPED', async () =>
      (await list()).find((c) => c.container_id === a.id)?.status === 'STOPPED' ? true : undefined,
    );
    await ensure('tl-mem-d');
    assert.equal(await metricValue('esb_agent_admission_refused_total', '{limit="memory"}'), 1);
  });

  test('worker directories are 0700 and logs 0600, also under a state dir left world-readable', async (t) => {
    cleanWorkers(t);
    const workersDir = path.join(stack.stateDir, 'workers');
    mkdirSync(workersDir, { recursive: true });
    chmodSync(workersDir, 0o755);
    await restartAgent({});
    assert.equal(statSync(workersDir).mode & 0o777, 0o700, 'start-up tightens the workers dir');
    const w = await ensure('tl-modes');
    await invoke(w.id, { action: 'log', n: 100 });
    const dir = path.join(workersDir, w.id);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(dir, 'output.log')).mode & 0o777, 0o600);
    assert.ok(statSync(path.join(dir, 'output.log')).size > 0, 'the shim writes to the log the agent made');
    // Mounted into the worker, whose process may run as any uid: readable, not writable.
    assert.equal(statSync(path.join(dir, 'resolv.conf')).mode & 0o777, 0o644);
  });

  test('the idle sweep destroys a worker and its invoke connection entry goes with it', async (t) => {
    cleanWorkers(t);
    await restartAgent({ AGENT_WORKER_IDLE_TTL_SECONDS: '3' });
    t.after(() => restartAgent({}));
    const w = await ensure('tl-idle');
    await invoke(w.id, { action: 'echo' });
    assert.equal(await metricValue('esb_agent_invoke_connections'), 1);
    await eventually('the idle sweep to destroy the worker', async () => ((await list()).length === 0 ? true : undefined), 20_000, 250);
    assert.equal(await metricValue('esb_agent_invoke_connections'), 0, 'no connection entry outlives its worker');
    assert.equal(await metricValue('esb_agent_idle_destroyed_total'), 1);
  });

  test('reconciliation kills processes only in cgroups it can attribute to its own workers', async (t) => {
    // A cgroup hierarchy where the test can place a process: v2, else v1's pids controller.
    const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
    const nsDir = v2 ? path.join('/sys/fs/cgroup', stack.namespace) : path.join('/sys/fs/cgroup/pids', stack.namespace);
    const madeNsDir = !existsSync(nsDir);
    const foreign = `${stack.idPrefix}foreign-${Date.now().toString(16)}`;
    const ours = `${stack.idPrefix}crashed-${Date.now().toString(16)}`;
    const children: ChildProcess[] = [];
    t.after(async () => {
      for (const c of children) c.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
      for (const id of [foreign, ours]) {
        try {
          rmdirSync(path.join(nsDir, id));
        } catch {
          // gone already
        }
      }
      if (madeNsDir) {
        try {
          rmdirSync(nsDir);
        } catch {
          // still used by a worker cgroup
        }
      }
    });
    const place = (id: string): ChildProcess => {
      mkdirSync(path.join(nsDir, id), { recursive: true });
      const child = spawn('sleep', ['600'], { stdio: 'ignore' });
      children.push(child);
      writeFileSync(path.join(nsDir, id, 'cgroup.procs'), String(child.pid));
      return child;
    };
    const foreignChild = place(foreign);
    const ourChild = place(ours);
    // `ours` has what a crashed Ensure leaves: its state dir entry.
    mkdirSync(path.join(stack.stateDir, 'workers', ours), { recursive: true });
    await restartAgent({});
    await eventually(
      'the attributable cgroup to be cleared',
      () => Promise.resolve(ourChild.exitCode !== null || ourChild.signalCode !== null ? true : undefined),
      10_000,
    );
    assert.equal(ourChild.signalCode, 'SIGKILL');
    assert.equal(foreignChild.exitCode, null, 'a process in a cgroup the agent cannot attribute to itself survives');
    assert.equal(foreignChild.signalCode, null);
    assert.ok(existsSync(path.join(nsDir, foreign)), 'and its cgroup stays');
    assert.ok(!existsSync(path.join(stack.stateDir, 'workers', ours)), "the crashed worker's entry is gone");
  });

  test('CONTAINERD_RUNC_BINARY reaches the shim as runc options; a missing binary fails Ensure and leaves nothing', async (t) => {
    cleanWorkers(t);
    await restartAgent({ CONTAINERD_RUNC_BINARY: '/usr/sbin/runc' });
    t.after(() => restartAgent({}));
    const w = await ensure('tl-runc');
    const rec = (await stack.containerd.call('containers', 'Get', { id: w.id })).container;
    const opts = stack.containerd.decodeAny(rec?.runtime?.options);
    assert.deepEqual(opts?.value, { binary_name: '/usr/sbin/runc' }, 'the container record carries the options');
    await invoke(w.id, { action: 'echo' });
    await destroy(w.id);

    await restartAgent({ CONTAINERD_RUNC_BINARY: '/nonexistent/esb-runc' });
    const e = await stack.callError('EnsureContainer', {
      function_name: 'tl-no-runc',
      image: stack.images.worker,
      env: {},
      owner_id: OWNER,
    });
    assert.notEqual(e.name, 'OK');
    assert.deepEqual(await list(), []);
    const leaks = await stack.leaks();
    assert.equal(leakCount(leaks), 0, JSON.stringify(leaks));
  });

  test('nothing left behind', async () => {
    const leaks = await stack.leaks();
    assert.equal(leakCount(leaks), 0, JSON.stringify(leaks));
  });
});

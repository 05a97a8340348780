/**
 * Issue 6 items 1–4 on real parts (containerd, runc, CNI plugins, registry from the harness):
 * the agent survives restarts and SIGKILLs with every worker intact and nothing leaked, copes
 * with containerd going away and coming back, and sweeps idle workers.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { createNetns, netnsExists, removeNetns } from '../../src/cni/netns.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { agentClient, callError, checkHealth, healthClient, unaryCall, type AgentServiceClient } from '../helpers/grpc.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import type { LeakReport } from '../harness/leaks.js';
import type { WorkerReply as Worker, ContainerStateReply as ContainerState, InvokeReply } from '../helpers/replies.js';
import { eventually } from '../harness/process.js';

const OWNER = 'gw-restart';

/** mulberry32: a tiny seeded PRNG, so a failing round can be replayed from its printed seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The agent as its own process (`esb-agent serve` from source), so it can be SIGKILLed. */
interface ChildAgent {
  readonly child: ChildProcess;
  readonly client: AgentServiceClient;
  readonly exited: Promise<void>;
}

const children = new Set<ChildProcess>();

async function startChildAgent(env: Record<string, string>): Promise<ChildAgent> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/cli-entry.ts', 'serve'], {
    cwd: PROJECT_ROOT,
    env: { ...env, AGENT_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      children.delete(child);
      resolve();
    }),
  );
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`child agent did not start in 60 s:\n${out.slice(-2000)}`));
    }, 60_000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      for (const line of out.split('\n')) {
        if (!line.includes('"esb-agent serving"')) continue;
        clearTimeout(timer);
        resolve((JSON.parse(line) as { grpcPort: number }).grpcPort);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`child agent exited (${code ?? sig}) before serving:\n${out.slice(-2000)}`));
    });
  });
  return { child, client: agentClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()), exited };
}

describe('restart survival, crash reconciliation, containerd restarts, idle sweep', () => {
  let stack: TestStack;

  before(async () => {
    stack = await startStack({ startAgent: false });
    await stack.startAgent();
    // Pull and unpack once, so that every round below races workers, not the first pull.
    const w = await stack.call<Worker>('EnsureContainer', {
      function_name: 'warmup',
      image: stack.images.worker,
      env: {},
      owner_id: OWNER,
    });
    await stack.call('DestroyContainer', { container_id: w.id, owner_id: OWNER });
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await stack.stop();
  });
  afterEach(async () => {
    // A failed assertion must not hand its workers to the next test.
    if (!stack.agent) await stack.startAgent();
    for (const c of await list()) await destroy(c.container_id);
  });

  const ensure = (fn: string, client?: AgentServiceClient) => {
    const req = { function_name: fn, image: stack.images.worker, env: {}, owner_id: OWNER };
    return client ? unaryCall<Worker>(client, 'EnsureContainer', req, { deadlineMs: 60_000 }) : stack.call<Worker>('EnsureContainer', req);
  };
  const destroy = (id: string) => stack.call('DestroyContainer', { container_id: id, owner_id: OWNER });
  const list = async () => (await stack.call<{ containers: ContainerState[] }>('ListContainers', { owner_id: OWNER })).containers;
  const invoke = (id: string, payload: object) =>
    stack.call<InvokeReply>('InvokeWorker', {
      container_id: id,
      owner_id: OWNER,
      path: '',
      payload: Buffer.from(JSON.stringify(payload)),
      headers: {},
      timeout_ms: 10_000,
    });
  const echo = async (id: string, n: number) => {
    const r = await invoke(id, { action: 'echo', n });
    assert.equal(r.status_code, 200, `worker ${id} answers`);
    assert.deepEqual(JSON.parse(r.body.toString()), { action: 'echo', n });
  };
  const counter = async (name: string, labels: Record<string, string> = {}) => {
    const m = (await stack.agent!.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
    return (m?.values ?? [])
      .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
      .reduce((a, v) => a + v.value, 0);
  };
  /** Every object on the host belongs to exactly the listed workers: no orphan of any kind. */
  const assertOnlyWorkers = (leaks: LeakReport, ids: string[], ips: string[], what: string) => {
    const sorted = (a: string[]) => [...a].sort();
    assert.deepEqual(sorted(leaks.containers), sorted(ids), `${what}: containers`);
    assert.deepEqual(sorted(leaks.tasks), sorted(ids), `${what}: tasks`);
    assert.deepEqual(sorted(leaks.snapshots), sorted(ids), `${what}: snapshots`);
    assert.deepEqual(leaks.leases, [], `${what}: leases`);
    assert.deepEqual(sorted(leaks.netns), sorted(ids), `${what}: netns`);
    assert.equal(leaks.veths.length, ids.length, `${what}: veths ${JSON.stringify(leaks.veths)}`);
    assert.deepEqual(sorted(leaks.ipReservations), sorted(ips), `${what}: host-local reservations`);
    assert.equal(
      leaks.cniCache.length,
      2 * ids.length,
      `${what}: CNI cache (main + loopback per worker) ${JSON.stringify(leaks.cniCache)}`,
    );
    assert.deepEqual(sorted(leaks.workerDirs), sorted(ids), `${what}: worker dirs`);
    assert.deepEqual(sorted(leaks.cgroups), sorted(ids), `${what}: worker cgroups (no stray runc init)`);
  };

  test('restart with 10 running and 5 paused workers: all listed with their IPs, invokable and resumable at once', async () => {
    const workers = await Promise.all(Array.from({ length: 15 }, (_, i) => ensure(`keep-${i}`)));
    const paused = workers.slice(10);
    for (const w of paused) await stack.call('PauseContainer', { container_id: w.id, owner_id: OWNER });
    await echo(workers[0]!.id, 0); // moves last_used_at of one worker past created_at
    const before = new Map((await list()).map((c) => [c.container_id, c]));

    await stack.stopAgent(); // AGENT_SHUTDOWN_POLICY=keep (default)
    await stack.startAgent();

    const after = await list();
    assert.equal(after.length, 15);
    for (const w of workers) {
      const c = after.find((x) => x.container_id === w.id);
      assert.ok(c, `${w.id} listed after the restart`);
      assert.equal(c.status, paused.includes(w) ? 'PAUSED' : 'RUNNING', w.id);
      assert.equal(c.last_used_at, before.get(w.id)?.last_used_at, `${w.id}: last_used_at kept across the restart`);
    }
    assert.equal(await counter('esb_agent_reconcile_removed_total'), 0, 'nothing to reconcile after a clean restart');
    // IPs: the label, the CNI cache and host-local still agree with what Ensure returned.
    assertOnlyWorkers(
      await stack.leaks(),
      workers.map((w) => w.id),
      workers.map((w) => w.ip_address),
      'after restart',
    );
    for (const [i, w] of workers.slice(0, 10).entries()) await echo(w.id, i);
    for (const w of paused) {
      const e = await stack.callError('InvokeWorker', {
        container_id: w.id,
        owner_id: OWNER,
        path: '',
        payload: Buffer.from('{}'),
        headers: {},
        timeout_ms: 2000,
      });
      assert.equal(e.name, 'FAILED_PRECONDITION', 'a paused worker is still paused');
      await stack.call('ResumeContainer', { container_id: w.id, owner_id: OWNER });
      await echo(w.id, 99);
    }
    for (const w of workers) await destroy(w.id);
    assert.equal(leakCount(await stack.leaks()), 0);
  });

  for (const seed of [11, 4242, 90_001, 7, 31_337]) {
    test(`SIGKILL during 20 concurrent Ensures (seed ${seed}): after restart no orphans, every acknowledged worker works`, async () => {
      const rand = prng(seed);
      await stack.stopAgent();
      const agent = await startChildAgent(stack.env);
      // The kill comes once `killAt` Ensures were acknowledged (so the others are somewhere in
      // their steps, whatever this machine's speed), plus a random extra delay.
      const killAt = Math.floor(rand() * 20);
      const extraMs = Math.floor(rand() * 60);
      const acked: Worker[] = [];
      let reached!: () => void;
      const enough = new Promise<void>((r) => (reached = r));
      if (killAt === 0) reached();
      const t0 = Date.now();
      const calls = Array.from({ length: 20 }, (_, i) =>
        ensure(`crash-${i}`, agent.client).then(
          (w) => {
            acked.push(w);
            if (acked.length >= killAt) reached();
          },
          () => undefined, // cut off by the kill
        ),
      );
      await enough;
      await new Promise((r) => setTimeout(r, extraMs));
      const killAfterMs = Date.now() - t0;
      agent.child.kill('SIGKILL');
      await agent.exited;
      await Promise.all(calls);
      agent.client.close();

      await stack.startAgent();
      const removed = await counter('esb_agent_reconcile_removed_total');
      const listed = await list();
      console.log(
        `# seed ${seed}: killed after ${killAfterMs} ms (${killAt} acknowledged + ${extraMs} ms); acknowledged ${acked.length}, listed ${listed.length}, reconciliation removed ${removed} objects`,
      );
      const listedIds = listed.map((c) => c.container_id);
      for (const w of acked) assert.ok(listedIds.includes(w.id), `acknowledged worker ${w.id} survived`);
      for (const c of listed) assert.equal(c.status, 'RUNNING', `${c.container_id} is a complete, running worker`);
      const ips: string[] = [];
      for (const c of listed) {
        const rec = (await stack.containerd.call('containers', 'Get', { id: c.container_id })).container;
        ips.push(rec?.labels['com.esb.ip'] ?? '');
      }
      assertOnlyWorkers(await stack.leaks(), listedIds, ips, `seed ${seed}`);
      for (const [i, w] of acked.entries()) await echo(w.id, i);
      for (const id of listedIds) await destroy(id);
      assert.equal(leakCount(await stack.leaks()), 0, JSON.stringify(await stack.leaks()));
    });
  }

  test('containerd killed and restarted under load: UNAVAILABLE during (never a hang), NOT_SERVING → SERVING, workers survive, events resume, leftovers reconciled', async () => {
    const [a, b] = await Promise.all([ensure('ctd-a'), ensure('ctd-b')]);
    const health = healthClient(`127.0.0.1:${stack.agent!.grpcPort}`, grpc.credentials.createInsecure());
    try {
      assert.equal(await checkHealth(health, 'esb.agent.v1.AgentService'), 'SERVING');
      // RPCs in flight while containerd dies: each ends with an answer, none hangs.
      const inflight = Array.from({ length: 10 }, (_, i) =>
        (i % 2 === 0
          ? stack.call('GetContainerMetrics', { container_id: a.id, owner_id: OWNER }, { deadlineMs: 20_000 })
          : stack
              .call('PauseContainer', { container_id: b.id, owner_id: OWNER }, { deadlineMs: 20_000 })
              .then(() => stack.call('ResumeContainer', { container_id: b.id, owner_id: OWNER }, { deadlineMs: 20_000 }))
        ).then(
          () => 'OK',
          (e: unknown) => grpc.status[(e as grpc.ServiceError).code],
        ),
      );
      await stack.ctd.crash();
      const outcomes = await Promise.all(inflight);
      for (const o of outcomes) assert.ok(o === 'OK' || o === 'UNAVAILABLE', `in-flight RPC ended with ${o}`);

      // During the outage: fast UNAVAILABLE for anything that needs containerd.
      for (const [method, req] of [
        ['GetContainerMetrics', { container_id: a.id, owner_id: OWNER }],
        ['PauseContainer', { container_id: a.id, owner_id: OWNER }],
        ['EnsureContainer', { function_name: 'during-outage', image: stack.images.worker, env: {}, owner_id: OWNER }],
      ] as const) {
        const t0 = Date.now();
        const e = await callError(stack.client!, method, req, { deadlineMs: 20_000 });
        assert.equal(e.name, 'UNAVAILABLE', `${method} during the outage: ${e.details}`);
        assert.ok(Date.now() - t0 < 15_000, `${method} answered without waiting for its deadline`);
      }
      await eventually(
        'health NOT_SERVING',
        async () => ((await checkHealth(health, 'esb.agent.v1.AgentService')) === 'NOT_SERVING' ? true : undefined),
        30_000,
      );
      // The worker table still answers List, and the workers themselves still serve.
      assert.deepEqual((await list()).map((c) => c.container_id).sort(), [a.id, b.id].sort());
      await echo(a.id, 1);

      // A half-made worker of ours appears while containerd is away (what an Ensure cut off by
      // the outage can leave): a state dir entry and a netns. It must be gone once containerd is back.
      const orphan = `${stack.idPrefix}orphan-0badc0de`;
      mkdirSync(path.join(stack.stateDir, 'workers', orphan), { recursive: true });
      await createNetns(orphan);

      await stack.ctd.restart();
      await eventually(
        'health SERVING',
        async () => ((await checkHealth(health, 'esb.agent.v1.AgentService')) === 'SERVING' ? true : undefined),
        30_000,
      );
      await eventually('the orphan reconciled', async () => ((await netnsExists(orphan)) ? undefined : true), 30_000);
      // The netns goes first; the counters move once the whole teardown of the orphan is done.
      await eventually(
        "the orphan's removal counted",
        async () => ((await counter('esb_agent_reconcile_removed_total', { kind: 'netns' })) >= 1 ? true : undefined),
        30_000,
      );
      await eventually(
        "the orphan's files counted",
        async () => ((await counter('esb_agent_reconcile_removed_total', { kind: 'worker_files' })) >= 1 ? true : undefined),
        30_000,
      );

      // containerd works again for the agent, and the workers survived (their shims kept them).
      const m = await eventually(
        'metrics after the restart',
        () => stack.call<{ metrics: { state: string } }>('GetContainerMetrics', { container_id: a.id, owner_id: OWNER }),
        30_000,
      );
      assert.equal(m.metrics.state, 'RUNNING');
      // b may have been left paused by a Pause that won and a Resume that lost the race with the crash.
      await stack.call('ResumeContainer', { container_id: b.id, owner_id: OWNER });
      await echo(a.id, 2);
      await echo(b.id, 3);
      // The event stream is back: an exit that happens now reaches the worker table.
      const task = (await stack.containerd.call('tasks', 'Get', { container_id: b.id })).process;
      process.kill(task!.pid, 'SIGKILL');
      await eventually(
        'exit event → STOPPED',
        async () => ((await list()).find((c) => c.container_id === b.id)?.status === 'STOPPED' ? true : undefined),
        30_000,
      );
      const c = await ensure('ctd-after');
      await echo(c.id, 4);
      for (const id of [a.id, b.id, c.id]) await destroy(id);
      const leaks = await stack.leaks();
      assert.equal(
        leakCount(leaks),
        0,
        `${JSON.stringify(leaks)}\n${stack.logs.lines
          .filter((l) => JSON.stringify(l).includes('lease'))
          .map((l) => JSON.stringify(l))
          .join('\n')}`,
      );
    } finally {
      health.close();
      if (!stack.ctd.running) await stack.ctd.restart();
    }
  });

  test('containerd stopped gracefully and started again (systemctl restart containerd): a running and a paused worker keep their process and state', async () => {
    const [run, paused] = await Promise.all([ensure('ctd-term-run'), ensure('ctd-term-paused')]);
    await stack.call('PauseContainer', { container_id: paused.id, owner_id: OWNER });
    const pidOf = async (id: string) => (await stack.containerd.call('tasks', 'Get', { container_id: id })).process!.pid;
    const pids = [await pidOf(run.id), await pidOf(paused.id)];
    await stack.ctd.pause(); // SIGTERM: containerd exits, the shims stay
    await stack.ctd.restart();
    await eventually(
      'containerd answers the agent again',
      () => stack.call('GetContainerMetrics', { container_id: run.id, owner_id: OWNER }).catch(() => undefined),
      30_000,
    );
    assert.deepEqual([await pidOf(run.id), await pidOf(paused.id)], pids, 'the same worker processes, not restarted ones');
    const status = async () => Object.fromEntries((await list()).map((c) => [c.container_id, c.status]));
    assert.deepEqual(await status(), { [run.id]: 'RUNNING', [paused.id]: 'PAUSED' });
    await echo(run.id, 1);
    await stack.call('ResumeContainer', { container_id: paused.id, owner_id: OWNER });
    await echo(paused.id, 2);
    for (const id of [run.id, paused.id]) await destroy(id);
    assert.equal(leakCount(await stack.leaks()), 0, JSON.stringify(await stack.leaks()));
  });

  test('a restart after a host-reboot-like loss of tasks removes the dead workers, IPs included', async () => {
    const w = await ensure('reboot');
    await stack.stopAgent();
    // What a reboot leaves: the container record, the files, the CNI cache and the host-local
    // reservation, but no task and no netns.
    const task = (await stack.containerd.call('tasks', 'Get', { container_id: w.id })).process;
    process.kill(task!.pid, 'SIGKILL');
    await eventually(
      'task stopped',
      async () => ((await stack.containerd.call('tasks', 'Get', { container_id: w.id })).process?.status === 'STOPPED' ? true : undefined),
      30_000,
    );
    await stack.containerd.call('tasks', 'Delete', { container_id: w.id });
    await removeNetns(w.id);
    await stack.startAgent();
    assert.deepEqual(await list(), [], 'a worker that can never run again is not listed');
    assert.equal(await counter('esb_agent_reconcile_removed_total', { kind: 'container' }), 1);
    assert.equal(leakCount(await stack.leaks()), 0, JSON.stringify(await stack.leaks()));
    const e = await stack.callError('InvokeWorker', {
      container_id: w.id,
      owner_id: OWNER,
      path: '',
      payload: Buffer.from('{}'),
      headers: {},
      timeout_ms: 1000,
    });
    assert.equal(e.name, 'NOT_FOUND');
  });

  test('idle sweep: AGENT_WORKER_IDLE_TTL_SECONDS destroys unused workers of any owner, keeps used ones', async () => {
    await stack.stopAgent();
    await stack.startAgent({ AGENT_WORKER_IDLE_TTL_SECONDS: '3' });
    const idle = await ensure('idle');
    const other = await stack.call<Worker>('EnsureContainer', {
      function_name: 'idle-other',
      image: stack.images.worker,
      env: {},
      owner_id: 'gw-old',
    });
    const busy = await ensure('busy');
    // Keep `busy` used while the other two go idle.
    const end = Date.now() + 30_000;
    let gone = false;
    while (Date.now() < end && !gone) {
      await echo(busy.id, 0);
      const others = (await stack.call<{ containers: ContainerState[] }>('ListContainers', { owner_id: 'gw-old' })).containers;
      gone = others.length === 0 && !(await list()).some((c) => c.container_id === idle.id);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(gone, 'idle workers destroyed within 30 s');
    assert.deepEqual(
      (await list()).map((c) => c.container_id),
      [busy.id],
    );
    assert.equal(await counter('esb_agent_idle_destroyed_total'), 2);
    assert.equal(leakCount(await stack.leaks()) > 0, true, 'busy is still there');
    assert.ok(!(await stack.leaks()).containers.includes(other.id), "the other owner's idle worker is gone too");
    await destroy(busy.id);
    assert.equal(leakCount(await stack.leaks()), 0);
    await stack.stopAgent();
    await stack.startAgent();
  });

  test('the last-used file is in the state dir and names the live workers', async () => {
    const w = await ensure('lastused');
    await echo(w.id, 1);
    await stack.stopAgent();
    const saved = JSON.parse(readFileSync(path.join(stack.stateDir, 'last-used.json'), 'utf8')) as Record<string, number | undefined>;
    assert.ok((saved[w.id] ?? 0) >= Math.floor(Date.now() / 1000) - 60, JSON.stringify(saved));
    await stack.startAgent();
  });
});

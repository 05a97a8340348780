/**
 * Cross-runtime conformance: the same contract cases (docs/contract.md#rules, docs/contract.md#rpcs) run against every runtime,
 * so the gateway sees one API whatever AGENT_RUNTIME is. `conformanceSuite` gets a starter for a
 * stack (containerd: harness/stack.ts, docker: harness/docker-stack.ts) and defines one
 * `describe` of cases on it. Runtime-specific behaviour lives in each runtime's own test file.
 * Not a `.test.ts` file: conformance.test.ts runs it once per runtime.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import type { AgentMethod } from '../../helpers/grpc.js';
import type { PushedTestImages } from '../../harness/images.js';
import type { WorkerReply as Worker, ContainerStateReply as ContainerState, InvokeReply } from '../../helpers/replies.js';
import { eventually } from '../../harness/process.js';
import { ioUringProbeElf } from '../../helpers/io-uring-probe.js';

/** What a runtime's stack offers the shared cases. */
export interface ConformanceStack {
  readonly images: PushedTestImages;
  readonly registryHost: string;
  /** Worker ids of this stack start with it. */
  readonly idPrefix: string;
  /** The worker subnet, `a.b.c.0/24`. */
  readonly subnet: string;
  call<Res = Record<string, unknown>>(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<Res>;
  callError(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<{ name: string; details: string }>;
  /** Everything this stack's workers left behind, as a count and a printable report. */
  leaks(): Promise<{ count: number; report: unknown }>;
  stop(): Promise<void>;
}

interface Metrics {
  container_id: string;
  function_name: string;
  state: string;
  memory_current: string;
  memory_max: string;
  oom_events: string;
  cpu_usage_ns: string;
  exit_code: number;
  exit_time: string;
  collected_at: string;
}

/** The test worker's `exec` answer. */
interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const OWNER = 'gateway-conformance';
const OTHER = 'gateway-other';
const MIB = 1024 * 1024;

/** What a harness stack (containerd or docker) must offer to be wrapped as a ConformanceStack. */
interface HarnessStack<Report> extends Pick<ConformanceStack, 'images' | 'idPrefix' | 'subnet' | 'call' | 'callError' | 'stop'> {
  readonly registry: { readonly host: string };
  leaks(): Promise<Report>;
}

/** Wraps a harness stack; `count` totals its runtime-specific leak report. */
export function asConformanceStack<Report>(stack: HarnessStack<Report>, count: (r: Report) => number): ConformanceStack {
  return {
    images: stack.images,
    registryHost: stack.registry.host,
    idPrefix: stack.idPrefix,
    subnet: stack.subnet,
    call: (m, r, o) => stack.call(m, r, o),
    callError: (m, r, o) => stack.callError(m, r, o),
    leaks: async () => {
      const report = await stack.leaks();
      return { count: count(report), report };
    },
    stop: () => stack.stop(),
  };
}

export function conformanceSuite(runtime: string, startStack: () => Promise<ConformanceStack>): void {
  describe(`conformance on ${runtime}`, () => {
    let stack: ConformanceStack | undefined;
    const s = (): ConformanceStack => {
      if (!stack) throw new Error('stack not started');
      return stack;
    };

    before(async () => {
      stack = await startStack();
    });
    after(async () => {
      await stack?.stop();
    });
    // A failed assertion must not leave its workers to the next case.
    afterEach(async () => {
      if (!stack) return;
      for (const owner of [OWNER, OTHER]) {
        for (const c of await list(owner)) await destroy(c.container_id, owner);
      }
    });

    const ensure = (req: Partial<{ function_name: string; image: string; env: Record<string, string>; owner_id: string }> = {}) =>
      s().call<Worker>('EnsureContainer', { function_name: 'conf-fn', image: s().images.worker, env: {}, owner_id: OWNER, ...req });
    const destroy = (id: string, owner = OWNER) =>
      s().call<{ success: boolean }>('DestroyContainer', { container_id: id, owner_id: owner });
    const list = async (owner = OWNER) =>
      (await s().call<{ containers: ContainerState[] }>('ListContainers', { owner_id: owner })).containers;
    const metrics = async (id: string, owner = OWNER) =>
      (await s().call<{ metrics: Metrics }>('GetContainerMetrics', { container_id: id, owner_id: owner })).metrics;
    const invokeReq = (id: string, payload: object, owner = OWNER) => ({
      container_id: id,
      owner_id: owner,
      path: '',
      payload: Buffer.from(JSON.stringify(payload)),
      headers: {},
      timeout_ms: 20_000,
    });
    const invoke = (id: string, payload: object) => s().call<InvokeReply>('InvokeWorker', invokeReq(id, payload));
    const json = (r: InvokeReply): Record<string, unknown> => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
    async function expectNoLeaks(what: string): Promise<void> {
      const { count, report } = await s().leaks();
      assert.equal(count, 0, `${what} left: ${JSON.stringify(report)}`);
    }
    test('Ensure from the local registry → a worker in the test subnet that InvokeWorker reaches', async () => {
      const w = await ensure({ function_name: 'conf-hello' });
      assert.match(w.id, new RegExp(`^${s().idPrefix}conf-hello-[0-9a-f]{8}$`));
      assert.equal(w.name, w.id);
      assert.equal(w.port, 8080);
      assert.ok(w.ip_address.startsWith(s().subnet.replace(/0\/24$/, '')), `${w.ip_address} not in ${s().subnet}`);
      const r = await invoke(w.id, { action: 'echo', hello: 'conformance' });
      assert.equal(r.status_code, 200);
      assert.deepEqual(json(r), { action: 'echo', hello: 'conformance' });
      assert.equal((await destroy(w.id)).success, true);
      await expectNoLeaks('ensure + invoke + destroy');
    });

    test('a blank image resolves CONTAINER_REGISTRY/safe(function_name):ESB_TAG; the request env reaches the worker', async () => {
      const w = await ensure({ function_name: 'Worker', image: '', env: { GREETING: 'hi', AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '192' } });
      const stats = json(await invoke(w.id, { action: 'stats' })) as { env: Record<string, string> };
      assert.equal(stats.env['GREETING'], 'hi');
      assert.equal(stats.env['AWS_LAMBDA_FUNCTION_MEMORY_SIZE'], '192');
      await destroy(w.id);
      await expectNoLeaks('blank-image ensure');
    });

    test("List: the caller's workers with RUNNING, names and Unix-second times; last_used_at follows invokes", async () => {
      const t0 = Math.floor(Date.now() / 1000);
      const w = await ensure({ function_name: 'conf-list' });
      const [c] = await list();
      assert.ok(c);
      assert.equal(c.container_id, w.id);
      assert.equal(c.container_name, w.id);
      assert.equal(c.function_name, 'conf-list');
      assert.equal(c.owner_id, OWNER);
      assert.equal(c.status, 'RUNNING');
      const created = Number(c.created_at);
      assert.ok(created >= t0 - 1 && created <= Date.now() / 1000 + 1, `created_at ${created} is not now in Unix seconds`);
      assert.ok(Number(c.last_used_at) >= created);
      await new Promise((r) => setTimeout(r, 1100));
      await invoke(w.id, { action: 'echo' });
      const later = (await list()).find((x) => x.container_id === w.id);
      assert.ok(
        later && Number(later.last_used_at) > created,
        `last_used_at ${later?.last_used_at} did not move past created_at ${created}`,
      );
      await destroy(w.id);
    });

    test('metrics: RUNNING, memory limit equals the request, working set and CPU time within sense', async () => {
      const w = await ensure({ function_name: 'conf-metrics', env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256' } });
      await invoke(w.id, { action: 'cpu', ms: 200 });
      const m = await metrics(w.id);
      assert.equal(m.container_id, w.id);
      assert.equal(m.function_name, 'conf-metrics');
      assert.equal(m.state, 'RUNNING');
      assert.equal(m.memory_max, String(256 * MIB));
      const cur = BigInt(m.memory_current);
      assert.ok(cur > 1n * BigInt(MIB) && cur < BigInt(256 * MIB), `memory_current ${cur} not within (1 MiB, 256 MiB)`);
      assert.ok(BigInt(m.cpu_usage_ns) >= 50_000_000n, `cpu_usage_ns ${m.cpu_usage_ns} after a 200 ms busy loop`);
      assert.equal(m.oom_events, '0');
      assert.equal(m.exit_code, 0);
      assert.ok(Math.abs(Number(m.collected_at) - Date.now() / 1000) < 60);
      await destroy(w.id);
    });

    test('OOM: a 64 MiB worker that allocates past its limit reads STOPPED, oom_events ≥ 1, exit 137', async () => {
      const w = await ensure({ function_name: 'conf-oom', env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '64' } });
      await s()
        .call('InvokeWorker', invokeReq(w.id, { action: 'oom', limitMb: 4096 }))
        .catch(() => undefined);
      const m = await eventually(
        'the OOM kill in metrics',
        async () => {
          const x = await metrics(w.id);
          return x.state === 'STOPPED' && BigInt(x.oom_events) >= 1n ? x : undefined;
        },
        20_000,
      );
      assert.equal(m.exit_code, 137);
      assert.ok(Number(m.exit_time) > 0);
      assert.equal(m.memory_current, '0');
      assert.equal((await list()).find((c) => c.container_id === w.id)?.status, 'STOPPED');
      const inv = await s().callError('InvokeWorker', invokeReq(w.id, { action: 'echo' }));
      assert.equal(inv.name, 'FAILED_PRECONDITION', inv.details);
      assert.equal((await destroy(w.id)).success, true);
      await expectNoLeaks('OOM-killed worker destroy');
    });

    test('worker sandbox: read-only image, a sized /tmp tmpfs, no CAP_NET_RAW, io_uring refused with EPERM', async () => {
      const w = await ensure({ function_name: 'conf-sandbox' });
      const exec = async (argv: string[]): Promise<ExecResult> =>
        json(await invoke(w.id, { action: 'exec', argv })) as unknown as ExecResult;
      const sh = (script: string): Promise<ExecResult> => exec(['/bin/sh', '-c', script]);
      // The image is read-only everywhere (Lambda's model); /tmp is the one writable place.
      for (const p of ['/esb-probe', '/etc/esb-probe', '/var/esb-probe', '/worker/esb-probe']) {
        const r = await sh(`echo x > ${p}`);
        assert.notEqual(r.code, 0, `${p} is writable`);
        assert.match(r.stderr, /Read-only file system/, p);
      }
      const ok = await sh('echo hello > /tmp/probe && cat /tmp/probe');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), 'hello');
      const mounts = (await exec(['/bin/cat', '/proc/self/mounts'])).stdout.split('\n').map((l) => l.split(' '));
      const tmp = mounts.find((f) => f[1] === '/tmp');
      assert.equal(tmp?.[2], 'tmpfs', '/tmp is a tmpfs');
      assert.match(tmp[3] ?? '', /(^|,)size=524288k(,|$)/, 'of AGENT_WORKER_TMP_SIZE_MB (512) MiB');
      assert.match(tmp[3] ?? '', /(^|,)nosuid(,|$)/);
      assert.match(tmp[3] ?? '', /(^|,)nodev(,|$)/);
      assert.doesNotMatch(tmp[3] ?? '', /(^|,)noexec(,|$)/, 'binaries may run from /tmp, as on Lambda');
      assert.match(mounts.find((f) => f[1] === '/')?.[3] ?? '', /(^|,)ro(,|$)/, 'the root is mounted read-only');
      // No CAP_NET_RAW (bit 13) in any set of the worker's processes.
      for (const file of ['/proc/1/status', '/proc/self/status']) {
        const status = (await exec(['/bin/cat', file])).stdout;
        for (const set of ['CapEff', 'CapPrm', 'CapBnd']) {
          const v = BigInt(`0x${new RegExp(`^${set}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? 'ffffffffffffffff'}`);
          assert.equal(v & (1n << 13n), 0n, `${file} ${set} has CAP_NET_RAW`);
        }
      }
      // io_uring_setup: EPERM from the seccomp profile. On this host the probe succeeds when
      // the kernel allows io_uring, which proves the refusal comes from the worker's filter.
      if (process.arch === 'x64') {
        const probe = ioUringProbeElf();
        const octal = [...probe].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
        const wrote = await sh(`printf '${octal}' > /tmp/iou && chmod 755 /tmp/iou`);
        assert.equal(wrote.code, 0, wrote.stderr);
        assert.equal((await exec(['/tmp/iou'])).code, 1, 'io_uring_setup answers EPERM inside the worker');
        if (readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() === '0') {
          const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-iou-'));
          try {
            writeFileSync(path.join(dir, 'iou'), probe, { mode: 0o755 });
            assert.equal(spawnSync(path.join(dir, 'iou')).status, 0, 'the same probe succeeds on the host');
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
        }
      }
      await destroy(w.id);
      await expectNoLeaks('sandbox checks');
    });

    test('Destroy twice → success both times; the worker is gone for every RPC', async () => {
      const w = await ensure({ function_name: 'conf-destroy' });
      assert.equal((await destroy(w.id)).success, true);
      assert.equal((await destroy(w.id)).success, true);
      assert.deepEqual(await list(), []);
      assert.equal((await s().callError('GetContainerMetrics', { container_id: w.id, owner_id: OWNER })).name, 'NOT_FOUND');
      assert.equal((await s().callError('InvokeWorker', invokeReq(w.id, { action: 'echo' }))).name, 'NOT_FOUND');
      await expectNoLeaks('double destroy');
    });

    test('another owner: not listed, and Destroy / Metrics / Invoke → PERMISSION_DENIED without revealing the owner', async () => {
      const mine = await ensure({ function_name: 'conf-mine' });
      const theirs = await ensure({ function_name: 'conf-theirs', owner_id: OTHER });
      assert.deepEqual(
        (await list()).map((c) => c.container_id),
        [mine.id],
      );
      assert.deepEqual(
        (await list(OTHER)).map((c) => c.container_id),
        [theirs.id],
      );
      for (const [method, req] of [
        ['DestroyContainer', { container_id: theirs.id, owner_id: OWNER }],
        ['GetContainerMetrics', { container_id: theirs.id, owner_id: OWNER }],
        ['InvokeWorker', invokeReq(theirs.id, { action: 'echo' })],
      ] as const) {
        const e = await s().callError(method, req);
        assert.equal(e.name, 'PERMISSION_DENIED', `${method}: ${e.details}`);
        assert.ok(!e.details.includes(OTHER), `${method} reveals the owner: ${e.details}`);
      }
      assert.equal((await list(OTHER)).length, 1, 'still there');
      await destroy(mine.id);
      await destroy(theirs.id, OTHER);
      await expectNoLeaks('two owners');
    });

    test('unknown container id → NOT_FOUND for Metrics and Invoke, success for Destroy', async () => {
      const id = `${s().idPrefix}never-00000000`;
      assert.equal((await s().callError('GetContainerMetrics', { container_id: id, owner_id: OWNER })).name, 'NOT_FOUND');
      assert.equal((await s().callError('InvokeWorker', invokeReq(id, { action: 'echo' }))).name, 'NOT_FOUND');
      assert.equal((await destroy(id)).success, true);
    });

    test('image missing from the registry → NOT_FOUND; nothing left behind', async () => {
      const e = await s().callError('EnsureContainer', {
        function_name: 'conf-missing',
        image: `${s().registryHost}/esb-test/does-not-exist:v1`,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(e.name, 'NOT_FOUND', e.details);
      assert.match(e.details, /not found|manifest unknown/i);
      assert.deepEqual(await list(), []);
      await expectNoLeaks('missing image');
    });

    test('bad env, bad memory size and a bad image reference → INVALID_ARGUMENT; nothing left behind', async () => {
      const badKey = await s().callError('EnsureContainer', {
        function_name: 'conf-bad',
        image: s().images.worker,
        env: { 'A=B': '1' },
        owner_id: OWNER,
      });
      assert.equal(badKey.name, 'INVALID_ARGUMENT', badKey.details);
      const badMem = await s().callError('EnsureContainer', {
        function_name: 'conf-bad',
        image: s().images.worker,
        env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: 'lots' },
        owner_id: OWNER,
      });
      assert.equal(badMem.name, 'INVALID_ARGUMENT', badMem.details);
      assert.match(badMem.details, /AWS_LAMBDA_FUNCTION_MEMORY_SIZE/);
      const badRef = await s().callError('EnsureContainer', {
        function_name: 'conf-bad',
        image: 'UPPER/Case::bad',
        env: {},
        owner_id: OWNER,
      });
      assert.equal(badRef.name, 'INVALID_ARGUMENT', badRef.details);
      assert.deepEqual(await list(), []);
      await expectNoLeaks('refused ensures');
    });
  });
}

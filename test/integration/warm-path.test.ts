/**
 * The warm path against a real containerd and the test worker (issue 5): PauseContainer /
 * ResumeContainer (idempotent, really freezes the process, FAILED_PRECONDITION on a stopped
 * worker, last_used_at), GetContainerMetrics (running, stopped, OOM-killed), InvokeWorker (6 MB
 * round trip, response cap, timeout, client cancel, one request at a time per worker, function
 * errors and headers passed through, readiness right after Ensure, no payload delivered twice)
 * and owner checks. One stack for the file (`test/harness/stack.ts`); every test destroys the
 * workers it made, and the last one asserts that nothing leaked.
 *
 * Traffic goes only to 127.0.0.1 (agent, registry) and, through the agent, to the workers of
 * this stack.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import type { ContainerStateReply as ContainerState, InvokeReply } from '../helpers/replies.js';
import { eventually } from '../harness/process.js';

const OWNER = 'warm-owner';
const MIB = 1024 * 1024;

interface WorkerInfo {
  id: string;
  name: string;
  ip_address: string;
  port: number;
}

interface ContainerMetrics {
  container_id: string;
  function_name: string;
  container_name: string;
  state: string;
  memory_current: string;
  memory_max: string;
  oom_events: string;
  cpu_usage_ns: string;
  exit_code: number;
  restart_count: number;
  exit_time: string;
  collected_at: string;
}

/** What the test worker's `stats` action reports (test/fixtures/worker/worker.mjs). */
interface WorkerStats {
  deliveries: number;
  deliveriesById: Record<string, number>;
  maxConcurrency: number;
  inFlight: number;
  aborted: number;
  abortedIds: string[];
  requests: number;
  ticks: number;
  startedAt: number;
  now: number;
  pid: number;
}

interface InvokeOptions {
  readonly owner?: string;
  readonly timeoutMs?: number;
  readonly deadlineMs?: number;
  readonly headers?: Record<string, string>;
}

describe('warm path: pause, resume, metrics and invoke on real workers', () => {
  let stack: TestStack | undefined;
  // Registered before the stack exists: stop() removes whatever part of it was made.
  after(async () => {
    await stack?.stop();
  });
  before(async () => {
    stack = await startStack();
  });

  const s = (): TestStack => {
    if (!stack) throw new Error('stack not started');
    return stack;
  };

  /**
   * Workers of one test, destroyed in its `after` hook (registered before the first Ensure, so
   * a failed assertion still cleans up).
   */
  function workers(t: TestContext): (env?: Record<string, string>, functionName?: string) => Promise<WorkerInfo> {
    const ids = new Set<string>();
    t.after(async () => {
      for (const id of ids) await s().call('DestroyContainer', { container_id: id, owner_id: OWNER });
    });
    return async (env = {}, functionName = 'warm-fn') => {
      const w = await s().call<WorkerInfo>('EnsureContainer', {
        function_name: functionName,
        image: s().images.worker,
        env,
        owner_id: OWNER,
      });
      ids.add(w.id);
      return w;
    };
  }

  function invokeReq(id: string, payload: Buffer | object, o: InvokeOptions): object {
    return {
      container_id: id,
      owner_id: o.owner ?? OWNER,
      path: '',
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)),
      headers: o.headers ?? {},
      timeout_ms: o.timeoutMs ?? 15_000,
    };
  }

  function invoke(id: string, payload: Buffer | object, o: InvokeOptions = {}): Promise<InvokeReply> {
    return s().call<InvokeReply>('InvokeWorker', invokeReq(id, payload, o), o.deadlineMs === undefined ? {} : { deadlineMs: o.deadlineMs });
  }

  function invokeError(id: string, payload: Buffer | object, o: InvokeOptions = {}): Promise<{ name: string; details: string }> {
    return s().callError('InvokeWorker', invokeReq(id, payload, o), o.deadlineMs === undefined ? {} : { deadlineMs: o.deadlineMs });
  }

  function json(r: InvokeReply): unknown {
    return JSON.parse(r.body.toString('utf8'));
  }

  async function stats(id: string): Promise<WorkerStats> {
    const r = await invoke(id, { action: 'stats' });
    assert.equal(r.status_code, 200);
    return json(r) as WorkerStats;
  }

  async function metrics(id: string, owner = OWNER): Promise<ContainerMetrics> {
    const r = await s().call<{ metrics: ContainerMetrics }>('GetContainerMetrics', { container_id: id, owner_id: owner });
    return r.metrics;
  }

  async function listed(id: string): Promise<ContainerState | undefined> {
    const r = await s().call<{ containers: ContainerState[] }>('ListContainers', { owner_id: OWNER });
    return r.containers.find((c) => c.container_id === id);
  }

  /** Every payload id reached the worker at most once (exactly once for `exact`). */
  function assertDeliveredOnce(st: WorkerStats, exact: readonly string[], atMostOnce: readonly string[] = []): void {
    for (const [id, n] of Object.entries(st.deliveriesById)) assert.ok(n <= 1, `payload ${id} was delivered ${n} times`);
    for (const id of exact) assert.equal(st.deliveriesById[id], 1, `payload ${id} delivered ${st.deliveriesById[id] ?? 0} times, want 1`);
    for (const id of atMostOnce) assert.ok((st.deliveriesById[id] ?? 0) <= 1, `payload ${id} delivered more than once`);
  }

  // ------------------------------------------------------------------ pause / resume

  test('pause and resume: idempotent, invoke refused while paused, the process really freezes, resume touches last_used_at', async (t) => {
    const ensure = workers(t);
    const w = await ensure();
    assert.equal((await invoke(w.id, { action: 'echo', id: 'p-ready' })).status_code, 200);

    // Resuming a running worker is a no-op success.
    assert.deepEqual(await s().call('ResumeContainer', { container_id: w.id, owner_id: OWNER }), { success: true });

    // Pause twice → success both times; List shows PAUSED; invoke → FAILED_PRECONDITION.
    assert.deepEqual(await s().call('PauseContainer', { container_id: w.id, owner_id: OWNER }), { success: true });
    assert.deepEqual(await s().call('PauseContainer', { container_id: w.id, owner_id: OWNER }), { success: true });
    assert.equal((await listed(w.id))?.status, 'PAUSED');
    assert.equal((await metrics(w.id)).state, 'PAUSED');
    const refused = await invokeError(w.id, { action: 'echo', id: 'p-refused' });
    assert.equal(refused.name, 'FAILED_PRECONDITION', refused.details);
    assert.match(refused.details, /paused/);

    // Resume → invoke works again; resume updates last_used_at (Unix seconds).
    const before = await listed(w.id);
    assert.ok(before);
    const lastUsedBefore = Number(before.last_used_at);
    await sleep(1100 - (Date.now() % 1000) + 50); // into a later second than the last invoke
    const resumeAt = Math.floor(Date.now() / 1000);
    assert.deepEqual(await s().call('ResumeContainer', { container_id: w.id, owner_id: OWNER }), { success: true });
    const afterResume = await listed(w.id);
    assert.equal(afterResume?.status, 'RUNNING');
    const lastUsedAfter = Number(afterResume.last_used_at);
    assert.ok(lastUsedAfter > lastUsedBefore, `last_used_at ${lastUsedAfter} not after ${lastUsedBefore}`);
    assert.ok(
      lastUsedAfter >= resumeAt && lastUsedAfter <= Math.ceil(Date.now() / 1000),
      `last_used_at ${lastUsedAfter} is not the resume time ${resumeAt}`,
    );
    assert.ok(Number(afterResume.created_at) <= lastUsedAfter);
    const ok = await invoke(w.id, { action: 'echo', id: 'p-after' });
    assert.equal(ok.status_code, 200);
    assert.deepEqual(json(ok), { action: 'echo', id: 'p-after' });

    // Frozen: over ~500 ms paused, the 10 ms tick counter barely moves; over ~500 ms running it
    // advances ~50.
    const PERIOD_MS = 500;
    const s0 = await stats(w.id);
    await sleep(PERIOD_MS);
    const s1 = await stats(w.id);
    await s().call('PauseContainer', { container_id: w.id, owner_id: OWNER });
    const pausedAt = performance.now();
    await sleep(PERIOD_MS);
    const pausedMs = performance.now() - pausedAt;
    await s().call('ResumeContainer', { container_id: w.id, owner_id: OWNER });
    const s2 = await stats(w.id);
    const running = s1.ticks - s0.ticks;
    const paused = s2.ticks - s1.ticks;
    t.diagnostic(
      `ticks: ${running} over ${PERIOD_MS} ms running, ${paused} over ${Math.round(pausedMs)} ms paused (plus the RPCs around it)`,
    );
    assert.ok(running >= 30, `the worker ticked only ${running} times in ${PERIOD_MS} ms while running`);
    assert.ok(paused < 20, `the worker ticked ${paused} times while paused: it was not frozen`);
    assert.ok(paused < running / 2, `paused ${paused} vs running ${running}`);
    // Same process (not restarted by pause/resume).
    assert.equal(s2.pid, s0.pid);
    assert.equal(s2.startedAt, s0.startedAt);
    assertDeliveredOnce(s2, ['p-ready', 'p-after'], ['p-refused']);
    assert.equal(s2.deliveriesById['p-refused'], undefined, 'an invoke refused while paused reached the worker');

    // A paused worker can be destroyed (thawed before the kill), promptly.
    await s().call('PauseContainer', { container_id: w.id, owner_id: OWNER });
    const d0 = performance.now();
    assert.deepEqual(await s().call('DestroyContainer', { container_id: w.id, owner_id: OWNER }), { success: true });
    assert.ok(performance.now() - d0 < 5000, `destroying a paused worker took ${Math.round(performance.now() - d0)} ms`);
    assert.equal(await listed(w.id), undefined);
  });

  test('a stopped worker (exit 3): pause/resume/invoke → FAILED_PRECONDITION; List STOPPED; metrics STOPPED, exit 3', async (t) => {
    const ensure = workers(t);
    const w = await ensure();
    const r = await invoke(w.id, { action: 'exit', code: 3, id: 'x-exit' });
    assert.equal(r.status_code, 200);
    assert.equal((json(r) as { exitCode: number }).exitCode, 3);

    const state = await eventually('List to show STOPPED', async () => {
      const c = await listed(w.id);
      return c?.status === 'STOPPED' ? c : undefined;
    });
    assert.equal(state.function_name, 'warm-fn');

    for (const method of ['PauseContainer', 'ResumeContainer'] as const) {
      const e = await s().callError(method, { container_id: w.id, owner_id: OWNER });
      assert.equal(e.name, 'FAILED_PRECONDITION', `${method}: ${e.details}`);
    }
    const inv = await invokeError(w.id, { action: 'echo', id: 'x-after' });
    assert.equal(inv.name, 'FAILED_PRECONDITION', inv.details);

    const m = await metrics(w.id);
    assert.equal(m.state, 'STOPPED');
    assert.equal(m.exit_code, 3);
    assert.ok(Number(m.exit_time) > 0, `exit_time ${m.exit_time}`);
    assert.ok(Math.abs(Number(m.exit_time) - Date.now() / 1000) < 120, `exit_time ${m.exit_time} is not about now`);
    assert.equal(m.memory_current, '0');
    assert.equal(m.cpu_usage_ns, '0');
    assert.equal(m.oom_events, '0');
    assert.equal(m.restart_count, 0);
    assert.equal(m.container_id, w.id);

    // Still listed after the failed calls, until destroyed.
    assert.equal((await listed(w.id))?.status, 'STOPPED');
  });

  // ------------------------------------------------------------------ metrics

  test('metrics of running workers: memory_current > 0, memory_max = the limit, cpu_usage_ns grows with work', async (t) => {
    const ensure = workers(t);
    const [big, dflt] = await Promise.all([ensure({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256' }, 'warm-big'), ensure({}, 'warm-default')]);
    for (const w of [big, dflt]) assert.equal((await invoke(w.id, { action: 'echo' })).status_code, 200);

    const mb = await metrics(big.id);
    const md = await metrics(dflt.id);
    for (const [m, w] of [
      [mb, big],
      [md, dflt],
    ] as const) {
      assert.equal(m.state, 'RUNNING');
      assert.equal(m.container_id, w.id);
      assert.ok(BigInt(m.memory_current) > 0n, `memory_current ${m.memory_current}`);
      assert.ok(BigInt(m.memory_current) < BigInt(m.memory_max), `memory_current ${m.memory_current} ≥ memory_max ${m.memory_max}`);
      assert.equal(m.oom_events, '0');
      assert.equal(m.exit_code, 0);
      assert.equal(m.exit_time, '0');
      assert.equal(m.restart_count, 0);
      assert.ok(Math.abs(Number(m.collected_at) - Date.now() / 1000) < 60, `collected_at ${m.collected_at}`);
    }
    assert.equal(mb.memory_max, String(256 * MIB));
    assert.equal(md.memory_max, String(128 * MIB));
    assert.equal(mb.function_name, 'warm-big');

    const cpu0 = BigInt((await metrics(big.id)).cpu_usage_ns);
    const r = await invoke(big.id, { action: 'cpu', ms: 300 });
    assert.equal(r.status_code, 200);
    const cpu1 = BigInt((await metrics(big.id)).cpu_usage_ns);
    t.diagnostic(`cpu_usage_ns ${cpu0} → ${cpu1} (+${(cpu1 - cpu0) / 1_000_000n} ms) over a 300 ms busy loop`);
    assert.ok(cpu1 - cpu0 >= 50_000_000n, `cpu_usage_ns grew by only ${cpu1 - cpu0} ns over a 300 ms busy loop`);
  });

  test('OOM: a 64 MiB worker that allocates past its limit is killed; metrics STOPPED, oom_events ≥ 1, exit 137', async (t) => {
    const ensure = workers(t);
    const w = await ensure({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '64' }, 'warm-oom');
    assert.equal((await metrics(w.id)).memory_max, String(64 * MIB));
    let outcome: string;
    try {
      const r = await invoke(w.id, { action: 'oom', limitMb: 4096, id: 'oom-1' }, { timeoutMs: 30_000 });
      // The worker answers only when it could allocate all 4096 MiB: the limit did not hold.
      const body = r.body.toString('utf8').slice(0, 200);
      outcome = `returned ${r.status_code} ${body}`;
      assert.ok(!(r.status_code === 200 && body.includes('"killed":false')), `the worker was not killed: ${outcome}`);
    } catch (err) {
      const e = err as { code?: number; details?: string };
      if (typeof e.code !== 'number') throw err;
      outcome = `failed ${e.code} ${e.details ?? ''}`;
      // Connection lost after the request was sent: INTERNAL (never UNAVAILABLE, which the
      // gateway would retry on a new worker).
      assert.equal(e.code, 13, `invoke of an OOM-killed worker: ${outcome}`);
    }
    t.diagnostic(`oom invoke: ${outcome}`);

    const m = await eventually('metrics to show the OOM kill', async () => {
      const x = await metrics(w.id);
      return x.state === 'STOPPED' && BigInt(x.oom_events) >= 1n ? x : undefined;
    });
    assert.equal(m.exit_code, 137);
    assert.ok(Number(m.exit_time) > 0);
    assert.equal(m.memory_current, '0');
    assert.equal((await listed(w.id))?.status, 'STOPPED');
    const inv = await invokeError(w.id, { action: 'echo' });
    assert.equal(inv.name, 'FAILED_PRECONDITION', inv.details);
  });

  test('OOM kills survive an agent restart: an OOM-killed worker still reads oom_events ≥ 1', async (t) => {
    t.after(async () => {
      if (!s().agent) await s().startAgent();
    });
    const ensure = workers(t);
    const w = await ensure({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '64' }, 'warm-oom-restart');
    await invoke(w.id, { action: 'oom', limitMb: 4096 }, { timeoutMs: 30_000 }).catch(() => undefined);
    await eventually('the OOM kill', async () => {
      const x = await metrics(w.id);
      return x.state === 'STOPPED' && BigInt(x.oom_events) >= 1n ? x : undefined;
    });
    await s().stopAgent();
    await s().startAgent();
    const m = await metrics(w.id);
    assert.equal(m.state, 'STOPPED');
    assert.equal(m.exit_code, 137);
    assert.ok(BigInt(m.oom_events) >= 1n, `after an agent restart oom_events is ${m.oom_events}`);
  });

  // ------------------------------------------------------------------ invoke

  test('invoke of a worker that exited at start → FAILED_PRECONDITION quickly, not a readiness wait until the timeout', async (t) => {
    const ensure = workers(t);
    // Listening on an address the worker does not have fails at start: the process exits 1
    // (no packet leaves the worker: 203.0.113.0/24 is TEST-NET-3 and only bind() is tried).
    const w = await ensure({ HOST: '203.0.113.77' }, 'warm-crash');
    const t0 = performance.now();
    const e = await invokeError(w.id, { action: 'echo' }, { timeoutMs: 5000 });
    const took = performance.now() - t0;
    t.diagnostic(`${e.name} after ${Math.round(took)} ms: ${e.details}`);
    assert.equal((await metrics(w.id)).state, 'STOPPED');
    assert.equal(e.name, 'FAILED_PRECONDITION', e.details);
    assert.ok(took < 3000, `took ${Math.round(took)} ms`);
  });

  test('invoke right after Ensure succeeds; 10 concurrent invokes reach the worker one at a time', async (t) => {
    const ensure = workers(t);
    const w = await ensure();
    // No waiting: the worker's HTTP server is probably not listening yet.
    const first = await invoke(w.id, { action: 'echo', id: 'c-first' }, { timeoutMs: 20_000 });
    assert.equal(first.status_code, 200);
    assert.deepEqual(json(first), { action: 'echo', id: 'c-first' });

    const ids = Array.from({ length: 10 }, (_, i) => `c-${i}`);
    const replies = await Promise.all(ids.map((id) => invoke(w.id, { action: 'sleep', ms: 50, id })));
    for (const [i, r] of replies.entries()) {
      assert.equal(r.status_code, 200);
      assert.equal((json(r) as { id: string }).id, ids[i]);
    }
    const st = await stats(w.id);
    assert.equal(st.maxConcurrency, 1, `the worker saw ${st.maxConcurrency} requests at once`);
    assertDeliveredOnce(st, ['c-first', ...ids]);
    assert.equal(st.aborted, 0);
  });

  test('6 MiB payload round trip; function errors, status codes and headers pass through', async (t) => {
    const ensure = workers(t);
    const w = await ensure();

    // Not JSON → echoed back unchanged.
    const big = Buffer.alloc(6 * MIB);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const echo = await invoke(w.id, big, { headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(echo.status_code, 200);
    assert.equal(echo.body.length, big.length);
    assert.ok(echo.body.equals(big), '6 MiB echo differs');
    assert.equal(echo.headers['content-type'], 'application/octet-stream');

    // A function error: 200 with X-Amz-Function-Error and the errorType body, untouched.
    const fe = await invoke(w.id, { action: 'error', message: 'boom from the test', id: 'e-1' });
    assert.equal(fe.status_code, 200);
    assert.equal(fe.headers['x-amz-function-error'], 'Unhandled');
    assert.deepEqual(json(fe), { errorType: 'TestError', errorMessage: 'boom from the test' });

    // 4xx/5xx are OK gRPC answers with that status code.
    const st = await invoke(w.id, { action: 'status', code: 502, id: 'e-2' });
    assert.equal(st.status_code, 502);
    assert.deepEqual(json(st), { status: 502, id: 'e-2' });

    // Multi-value response headers joined with ', '; hop-by-hop headers dropped; request
    // headers reach the worker.
    const h = await invoke(
      w.id,
      { action: 'headers', id: 'e-3' },
      { headers: { 'X-Test-Header': 'hello', 'X-Amz-Client-Context': 'ctx' } },
    );
    assert.equal(h.status_code, 200);
    assert.equal(h.headers['x-multi'], 'one, two');
    assert.equal(h.headers['set-cookie'], 'a=1; Path=/, b=2; Path=/');
    for (const hop of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade'])
      assert.equal(h.headers[hop], undefined, `hop-by-hop header ${hop} passed through`);
    const seen = (json(h) as { headers: Record<string, string> }).headers;
    assert.equal(seen['x-test-header'], 'hello');
    assert.equal(seen['x-amz-client-context'], 'ctx');

    const stt = await stats(w.id);
    assertDeliveredOnce(stt, ['e-1', 'e-2', 'e-3']);
    assert.equal(stt.maxConcurrency, 1);
  });

  test('timeout → DEADLINE_EXCEEDED on time; client cancel aborts the worker request; nothing is delivered twice', async (t) => {
    const ensure = workers(t);
    const w = await ensure();
    assert.equal((await invoke(w.id, { action: 'echo', id: 't-ready' })).status_code, 200);

    // The invoke's own timeout.
    const TIMEOUT_MS = 500;
    const t0 = performance.now();
    const slow = await invokeError(w.id, { action: 'sleep', ms: 3000, id: 't-slow' }, { timeoutMs: TIMEOUT_MS });
    const took = performance.now() - t0;
    t.diagnostic(`timeout_ms ${TIMEOUT_MS}: DEADLINE_EXCEEDED after ${Math.round(took)} ms`);
    assert.equal(slow.name, 'DEADLINE_EXCEEDED', slow.details);
    assert.ok(took >= TIMEOUT_MS - 20, `failed after ${Math.round(took)} ms, before its ${TIMEOUT_MS} ms timeout`);
    assert.ok(took < TIMEOUT_MS + 400, `DEADLINE_EXCEEDED after ${Math.round(took)} ms for a ${TIMEOUT_MS} ms timeout`);

    // The worker is still busy with t-slow (RIE serves one at a time); stats waits behind it.
    const st1 = await stats(w.id);
    assert.ok(st1.abortedIds.includes('t-slow'), `the timed-out request was not aborted at the worker: ${JSON.stringify(st1.abortedIds)}`);

    // The client's gRPC deadline: the agent aborts the worker request.
    const t1 = performance.now();
    const cancelled = await invokeError(w.id, { action: 'sleep', ms: 2000, id: 't-cancel' }, { timeoutMs: 20_000, deadlineMs: 300 });
    const tookCancel = performance.now() - t1;
    assert.equal(cancelled.name, 'DEADLINE_EXCEEDED', cancelled.details);
    assert.ok(tookCancel < 1000, `client deadline 300 ms, call ended after ${Math.round(tookCancel)} ms`);
    const st2 = await eventually('the worker to see the cancelled request go away', async () => {
      const x = await stats(w.id);
      return x.abortedIds.includes('t-cancel') ? x : undefined;
    });
    assert.ok(st2.aborted > st1.aborted, `aborted ${st1.aborted} → ${st2.aborted}`);

    // The worker serves normally afterwards, on a new connection.
    const ok = await invoke(w.id, { action: 'echo', id: 't-after' });
    assert.equal(ok.status_code, 200);
    const st3 = await stats(w.id);
    assertDeliveredOnce(st3, ['t-ready', 't-after'], ['t-slow', 't-cancel']);
    assert.equal(st3.maxConcurrency, 1);
  });

  test('response cap: AGENT_INVOKE_MAX_RESPONSE_SIZE bytes pass, one more → RESOURCE_EXHAUSTED', async (t) => {
    const CAP = MIB;
    // Restore the default agent even when an assertion fails; registered before the restart
    // (and before the worker, so it runs after the worker's destroy).
    t.after(async () => {
      await s().stopAgent();
      await s().startAgent();
    });
    const ensure = workers(t);
    await s().stopAgent();
    await s().startAgent({ AGENT_INVOKE_MAX_RESPONSE_SIZE: String(CAP) });
    const w = await ensure();

    const atCap = await invoke(w.id, { action: 'bytes', n: CAP, id: 'b-cap' });
    assert.equal(atCap.status_code, 200);
    assert.equal(atCap.body.length, CAP);
    const over = await invokeError(w.id, { action: 'bytes', n: CAP + 1, id: 'b-over' });
    assert.equal(over.name, 'RESOURCE_EXHAUSTED', over.details);
    assert.match(over.details, /AGENT_INVOKE_MAX_RESPONSE_SIZE/);
    // The next call works (the oversized answer's connection was dropped, not reused).
    const next = await invoke(w.id, { action: 'echo', id: 'b-next' });
    assert.equal(next.status_code, 200);
    assert.deepEqual(json(next), { action: 'echo', id: 'b-next' });
    const st = await stats(w.id);
    assertDeliveredOnce(st, ['b-cap', 'b-over', 'b-next']);
  });

  // ------------------------------------------------------------------ owners

  test('another owner: pause/resume/metrics/invoke/destroy → PERMISSION_DENIED, revealing nothing', async (t) => {
    const ensure = workers(t);
    const w = await ensure({}, 'warm-secret-fn');
    const other = 'someone-else';
    const calls: [string, () => Promise<{ name: string; details: string }>][] = [
      ['PauseContainer', () => s().callError('PauseContainer', { container_id: w.id, owner_id: other })],
      ['ResumeContainer', () => s().callError('ResumeContainer', { container_id: w.id, owner_id: other })],
      ['GetContainerMetrics', () => s().callError('GetContainerMetrics', { container_id: w.id, owner_id: other })],
      ['InvokeWorker', () => invokeError(w.id, { action: 'echo', id: 'o-denied' }, { owner: other })],
      ['DestroyContainer', () => s().callError('DestroyContainer', { container_id: w.id, owner_id: other })],
    ];
    for (const [method, call] of calls) {
      const e = await call();
      assert.equal(e.name, 'PERMISSION_DENIED', `${method}: ${e.details}`);
      // The message may name what the caller sent (owner, id), nothing else.
      assert.doesNotMatch(
        e.details.replaceAll(w.id, '<id>'),
        /warm-secret-fn|running|paused|10\.\d+\.\d+\.\d+/i,
        `${method} reveals details: ${e.details}`,
      );
    }
    const theirs = await s().call<{ containers: ContainerState[] }>('ListContainers', { owner_id: other });
    assert.equal(theirs.containers.length, 0);
    // Untouched: still running, never paused, the denied payload never delivered.
    assert.equal((await listed(w.id))?.status, 'RUNNING');
    const st = await stats(w.id);
    assert.equal(st.deliveriesById['o-denied'], undefined);
  });

  test('leaves nothing behind', async () => {
    const r = await s().leaks();
    assert.equal(leakCount(r), 0, JSON.stringify(r));
  });
});

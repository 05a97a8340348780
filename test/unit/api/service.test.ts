import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AgentError, type ErrorCode } from '../../../src/errors.js';
import {
  createAgentService,
  toContainerMetrics,
  toContainerState,
  type InvokeRequest,
  type InvokeTarget,
  type Invoker,
} from '../../../src/api/service.js';
import type { RpcContext } from '../../../src/api/status.js';
import { DEFAULT_INVOKE_PATH } from '../../../src/api/validate.js';
import { FakeRuntime, fakeWorker } from '../../helpers/fake-runtime.js';

function ctx(): RpcContext & { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  return {
    signal: new AbortController().signal,
    annotate: (f) => Object.assign(fields, f),
    fields,
  };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<AgentError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AgentError, `expected AgentError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, got success`);
}

class FakeInvoker implements Invoker {
  readonly calls: { target: InvokeTarget; req: InvokeRequest; signal: AbortSignal }[] = [];
  readonly closed: string[] = [];
  invoke(target: InvokeTarget, req: InvokeRequest, opts: { signal: AbortSignal }) {
    this.calls.push({ target, req, signal: opts.signal });
    return Promise.resolve({ statusCode: 202, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":1}') });
  }
  closeWorker(id: string): Promise<void> {
    this.closed.push(id);
    return Promise.resolve();
  }
}

const A = 'owner-a';
const B = 'owner-b';

function setup(invoker?: Invoker) {
  const runtime = new FakeRuntime().add(
    fakeWorker({ id: 'w-a1', ownerId: A, functionName: 'f1' }),
    fakeWorker({ id: 'w-a2', ownerId: A, functionName: 'f2', status: 'PAUSED' }),
    fakeWorker({ id: 'w-a3', ownerId: A, status: 'STOPPED', exitCode: 137 }),
    fakeWorker({ id: 'w-b1', ownerId: B }),
  );
  const svc = createAgentService({ runtime, invoker, invokeDefaultTimeoutMs: 30_000 });
  return { runtime, svc };
}

describe('EnsureContainer', () => {
  test('validates, calls runtime.ensure once with camelCase fields and the signal, maps WorkerInfo', async () => {
    const { runtime, svc } = setup();
    const c = ctx();
    const res = await svc.ensureContainer({ function_name: 'hello', image: ' img:1 ', env: { A: '1' }, owner_id: ' gw ' }, c);
    assert.equal(runtime.calls.length, 1);
    assert.deepEqual(runtime.calls[0]!.req, { functionName: 'hello', image: 'img:1', env: { A: '1' }, ownerId: 'gw' });
    assert.equal(runtime.calls[0]!.signal, c.signal);
    assert.deepEqual(Object.keys(res).sort(), ['id', 'ip_address', 'name', 'port']);
    assert.equal(res.ip_address, '10.88.0.2');
    assert.equal(res.port, 8080);
    assert.equal(c.fields['containerId'], res.id);
  });
  test('invalid → INVALID_ARGUMENT and the runtime is never called', async () => {
    const { runtime, svc } = setup();
    await rejectsWith(
      svc.ensureContainer({ function_name: 'f', image: '', env: { 'A=B': 'x' }, owner_id: 'gw' }, ctx()),
      'INVALID_ARGUMENT',
      /'='/,
    );
    await rejectsWith(
      svc.ensureContainer({ function_name: '', image: '', env: {}, owner_id: 'gw' }, ctx()),
      'INVALID_ARGUMENT',
      /function_name is required/,
    );
    assert.equal(runtime.calls.length, 0);
  });
  test('runtime errors pass through with their code', async () => {
    const { runtime, svc } = setup();
    runtime.onEnsure = () => Promise.reject(new AgentError('NOT_FOUND', 'image registry:5010/f:latest not found'));
    await rejectsWith(svc.ensureContainer({ function_name: 'f', image: '', env: {}, owner_id: 'gw' }, ctx()), 'NOT_FOUND', /image/);
  });
});

test('a runtime that cannot pause (docker): Pause/Resume → its UNIMPLEMENTED whatever the arguments', async () => {
  const { runtime, svc } = setup();
  runtime.canPause = false;
  runtime.onPause = () => Promise.reject(new AgentError('UNIMPLEMENTED', 'PauseContainer is not implemented by the docker runtime'));
  runtime.onResume = () => Promise.reject(new AgentError('UNIMPLEMENTED', 'ResumeContainer is not implemented by the docker runtime'));
  for (const req of [
    { container_id: 'w-a1', owner_id: A },
    { container_id: 'nope', owner_id: A },
    { container_id: 'w-b1', owner_id: A },
    { container_id: '', owner_id: '' },
  ]) {
    await rejectsWith(svc.pauseContainer(req, ctx()), 'UNIMPLEMENTED', /docker runtime/);
    await rejectsWith(svc.resumeContainer(req, ctx()), 'UNIMPLEMENTED', /docker runtime/);
  }
  assert.deepEqual(
    runtime.calls.map((c) => c.method),
    Array.from({ length: 4 }, () => ['pause', 'resume']).flat(),
  );
});

describe('ownership (Pause, Resume, GetContainerMetrics, InvokeWorker)', () => {
  const rpcs = ['pauseContainer', 'resumeContainer', 'getContainerMetrics', 'invokeWorker'] as const;
  for (const rpc of rpcs) {
    test(`${rpc}: unknown id → NOT_FOUND "container <id> not found"`, async () => {
      const { runtime, svc } = setup(new FakeInvoker());
      await rejectsWith(
        svc[rpc]({ container_id: 'nope', owner_id: A, path: '', payload: Buffer.alloc(0), headers: {}, timeout_ms: 0 }, ctx()),
        'NOT_FOUND',
        /^container nope not found/,
      );
      assert.equal(runtime.calls.length, 0);
    });
    test(`${rpc}: another owner's container → PERMISSION_DENIED revealing nothing about it`, async () => {
      const { runtime, svc } = setup(new FakeInvoker());
      const err = await rejectsWith(
        svc[rpc]({ container_id: 'w-b1', owner_id: A, path: '', payload: Buffer.alloc(0), headers: {}, timeout_ms: 0 }, ctx()),
        'PERMISSION_DENIED',
      );
      assert.ok(!err.message.includes(B), 'the real owner is not named');
      assert.ok(!/RUNNING|10\.88|fn/.test(err.message), 'no state, address or function is revealed');
      assert.equal(runtime.calls.length, 0);
    });
    test(`${rpc}: blank owner → INVALID_ARGUMENT, blank id → INVALID_ARGUMENT`, async () => {
      const { svc } = setup(new FakeInvoker());
      await rejectsWith(
        svc[rpc]({ container_id: 'w-a1', owner_id: '', path: '', payload: Buffer.alloc(0), headers: {}, timeout_ms: 0 }, ctx()),
        'INVALID_ARGUMENT',
        /owner_id is required/,
      );
      await rejectsWith(
        svc[rpc]({ container_id: '', owner_id: A, path: '', payload: Buffer.alloc(0), headers: {}, timeout_ms: 0 }, ctx()),
        'INVALID_ARGUMENT',
        /container_id is required/,
      );
    });
  }
  test('Pause and Resume of an owned container call the runtime once and answer success', async () => {
    const { runtime, svc } = setup();
    assert.deepEqual(await svc.pauseContainer({ container_id: 'w-a1', owner_id: A }, ctx()), { success: true });
    assert.deepEqual(await svc.resumeContainer({ container_id: 'w-a1', owner_id: A }, ctx()), { success: true });
    assert.deepEqual(
      runtime.calls.map((c) => `${c.method}:${c.id ?? ''}`),
      ['pause:w-a1', 'resume:w-a1'],
    );
  });
  test('Pause of a stopped container: the runtime FAILED_PRECONDITION passes through', async () => {
    const { runtime, svc } = setup();
    runtime.onPause = (id) => Promise.reject(new AgentError('FAILED_PRECONDITION', `container ${id} has stopped`));
    await rejectsWith(svc.pauseContainer({ container_id: 'w-a3', owner_id: A }, ctx()), 'FAILED_PRECONDITION');
  });
});

describe('DestroyContainer', () => {
  test('unknown id → success=true without calling the runtime (idempotent)', async () => {
    const { runtime, svc } = setup();
    assert.deepEqual(await svc.destroyContainer({ function_name: '', container_id: 'gone', owner_id: A }, ctx()), { success: true });
    assert.equal(runtime.calls.length, 0);
  });
  test("another owner's → PERMISSION_DENIED, nothing destroyed", async () => {
    const { runtime, svc } = setup();
    await rejectsWith(svc.destroyContainer({ function_name: '', container_id: 'w-b1', owner_id: A }, ctx()), 'PERMISSION_DENIED');
    assert.ok(runtime.workers.has('w-b1'));
  });
  test('owned → runtime.destroy, success=true, the invoker forgets the worker; function_name is ignored', async () => {
    const invoker = new FakeInvoker();
    const { runtime, svc } = setup(invoker);
    assert.deepEqual(await svc.destroyContainer({ function_name: 'something-else', container_id: 'w-a1', owner_id: A }, ctx()), {
      success: true,
    });
    assert.deepEqual(
      runtime.calls.map((c) => c.method),
      ['destroy'],
    );
    assert.deepEqual(invoker.closed, ['w-a1']);
  });
  test('blank id or owner → INVALID_ARGUMENT', async () => {
    const { svc } = setup();
    await rejectsWith(
      svc.destroyContainer({ function_name: '', container_id: '', owner_id: A }, ctx()),
      'INVALID_ARGUMENT',
      /container_id/,
    );
    await rejectsWith(
      svc.destroyContainer({ function_name: '', container_id: 'w-a1', owner_id: ' ' }, ctx()),
      'INVALID_ARGUMENT',
      /owner_id/,
    );
  });
});

describe('ListContainers', () => {
  test("only the caller's containers, times as Unix seconds", async () => {
    const { svc } = setup();
    const res = await svc.listContainers({ owner_id: ` ${A} ` }, ctx());
    assert.deepEqual(res.containers?.map((c) => c.container_id).sort(), ['w-a1', 'w-a2', 'w-a3']);
    const a1 = res.containers.find((c) => c.container_id === 'w-a1');
    assert.deepEqual(a1, {
      container_id: 'w-a1',
      function_name: 'f1',
      status: 'RUNNING',
      last_used_at: '1700000100',
      container_name: 'w-a1',
      created_at: '1700000000',
      owner_id: A,
    });
  });
  test('an owner with nothing → empty list; blank owner → INVALID_ARGUMENT', async () => {
    const { svc } = setup();
    assert.deepEqual(await svc.listContainers({ owner_id: 'nobody' }, ctx()), { containers: [] });
    await rejectsWith(svc.listContainers({ owner_id: '' }, ctx()), 'INVALID_ARGUMENT', /owner_id is required/);
  });
  test('odd times never fail the list', () => {
    const s = toContainerState(fakeWorker({ id: 'x', createdAt: Number.NaN, lastUsedAt: -5 }));
    assert.equal(s.created_at, '0');
    assert.equal(s.last_used_at, '0');
    assert.equal(toContainerState(fakeWorker({ id: 'x', createdAt: 1.7e9 + 0.9 })).created_at, '1700000000');
  });
});

describe('GetContainerMetrics', () => {
  test('maps WorkerMetrics: bigints → decimal strings (2^64−1 exact), restart_count 0', async () => {
    const { runtime, svc } = setup();
    runtime.onMetrics = () =>
      Promise.resolve({
        state: 'STOPPED',
        memoryCurrentBytes: 0n,
        memoryMaxBytes: 2n ** 64n - 1n,
        oomEvents: 1n,
        cpuUsageNs: 123456789012345678n,
        exitCode: 137,
        exitTime: 1_700_000_300,
        collectedAt: 1_700_000_301,
      });
    const res = await svc.getContainerMetrics({ container_id: 'w-a1', owner_id: A }, ctx());
    assert.deepEqual(res.metrics, {
      container_id: 'w-a1',
      function_name: 'f1',
      container_name: 'w-a1',
      state: 'STOPPED',
      memory_current: '0',
      memory_max: '18446744073709551615',
      oom_events: '1',
      cpu_usage_ns: '123456789012345678',
      exit_code: 137,
      restart_count: 0,
      exit_time: '1700000300',
      collected_at: '1700000301',
    });
  });
  test('out-of-range numbers do not wrap', () => {
    const m = toContainerMetrics(fakeWorker({ id: 'x' }), {
      state: 'RUNNING',
      memoryCurrentBytes: -1n,
      memoryMaxBytes: 0n,
      oomEvents: 0n,
      cpuUsageNs: 0n,
      exitCode: -1,
      exitTime: 0,
      collectedAt: 0,
    });
    assert.equal(m.memory_current, '0');
    assert.equal(m.exit_code, 0);
  });
  test('"metrics not implemented" from the runtime passes through as UNIMPLEMENTED (the gateway matches that text)', async () => {
    const { runtime, svc } = setup();
    runtime.onMetrics = () => Promise.reject(new AgentError('UNIMPLEMENTED', 'metrics not implemented for docker runtime'));
    await rejectsWith(svc.getContainerMetrics({ container_id: 'w-a1', owner_id: A }, ctx()), 'UNIMPLEMENTED', /metrics not implemented/);
  });
});

describe('InvokeWorker', () => {
  const req = (over: Record<string, unknown> = {}) => ({
    container_id: 'w-a1',
    owner_id: A,
    path: '',
    payload: Buffer.from('{}'),
    headers: {},
    timeout_ms: 0,
    ...over,
  });

  test('without an invoker → UNIMPLEMENTED "InvokeWorker is not implemented yet" (after validation)', async () => {
    const { svc } = setup();
    await rejectsWith(svc.invokeWorker(req(), ctx()), 'UNIMPLEMENTED', /^InvokeWorker is not implemented yet$/);
    await rejectsWith(svc.invokeWorker(req({ owner_id: '' }), ctx()), 'INVALID_ARGUMENT');
  });
  test('target from the worker table, default path and timeout, touch after success, reply mapped', async () => {
    const invoker = new FakeInvoker();
    const { runtime, svc } = setup(invoker);
    const c = ctx();
    const res = await svc.invokeWorker(req({ headers: { 'X-A': '1' } }), c);
    assert.equal(invoker.calls.length, 1);
    const call = invoker.calls[0]!;
    const { stoppedReason, ...target } = call.target;
    assert.deepEqual(target, { id: 'w-a1', ipAddress: '10.88.0.2', port: 8080 });
    assert.equal(stoppedReason?.(), undefined, 'a running worker is not stopped');
    assert.equal(call.req.path, DEFAULT_INVOKE_PATH);
    assert.equal(call.req.timeoutMs, 30_000);
    assert.deepEqual(call.req.headers, { 'X-A': '1' });
    assert.equal(call.signal, c.signal);
    assert.deepEqual(runtime.touched, ['w-a1']);
    assert.deepEqual(res, { status_code: 202, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":1}') });
  });
  test('a paused or stopped worker → FAILED_PRECONDITION, nothing sent', async () => {
    const invoker = new FakeInvoker();
    const { svc } = setup(invoker);
    await rejectsWith(svc.invokeWorker(req({ container_id: 'w-a2' }), ctx()), 'FAILED_PRECONDITION', /paused; resume it/);
    await rejectsWith(svc.invokeWorker(req({ container_id: 'w-a3' }), ctx()), 'FAILED_PRECONDITION', /stopped \(exit code 137\)/);
    assert.equal(invoker.calls.length, 0);
  });
  test('invoker errors pass through; no touch on failure', async () => {
    const invoker = new FakeInvoker();
    invoker.invoke = () => Promise.reject(new AgentError('DEADLINE_EXCEEDED', 'invoke worker w-a1: timed out'));
    const { runtime, svc } = setup(invoker);
    await rejectsWith(svc.invokeWorker(req(), ctx()), 'DEADLINE_EXCEEDED');
    assert.deepEqual(runtime.touched, []);
  });
  test('a path with a scheme → INVALID_ARGUMENT before anything is sent', async () => {
    const invoker = new FakeInvoker();
    const { svc } = setup(invoker);
    await rejectsWith(svc.invokeWorker(req({ path: 'http://169.254.169.254/' }), ctx()), 'INVALID_ARGUMENT', /looks like a URL/);
    assert.equal(invoker.calls.length, 0);
  });
});

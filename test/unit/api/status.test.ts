import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { AgentError, type ErrorCode } from '../../../src/errors.js';
import { AgentMetrics } from '../../../src/metrics.js';
import {
  InflightTracker,
  MAX_DETAILS_CHARS,
  STATUS_BY_CODE,
  toAgentError,
  toServiceError,
  toStatus,
  unary,
  type RpcHandler,
} from '../../../src/api/status.js';
import { LogCapture, captureLogger } from '../../helpers/logs.js';

describe('toStatus: every AgentError code → its gRPC status (docs/errors.md#codes)', () => {
  const table: [ErrorCode, grpc.status][] = [
    ['INVALID_ARGUMENT', grpc.status.INVALID_ARGUMENT],
    ['NOT_FOUND', grpc.status.NOT_FOUND],
    ['ALREADY_EXISTS', grpc.status.ALREADY_EXISTS],
    ['PERMISSION_DENIED', grpc.status.PERMISSION_DENIED],
    ['FAILED_PRECONDITION', grpc.status.FAILED_PRECONDITION],
    ['RESOURCE_EXHAUSTED', grpc.status.RESOURCE_EXHAUSTED],
    ['DEADLINE_EXCEEDED', grpc.status.DEADLINE_EXCEEDED],
    ['CANCELLED', grpc.status.CANCELLED],
    ['UNAVAILABLE', grpc.status.UNAVAILABLE],
    ['UNIMPLEMENTED', grpc.status.UNIMPLEMENTED],
    ['INTERNAL', grpc.status.INTERNAL],
  ];
  for (const [code, status] of table) {
    test(`${code} → ${grpc.status[status]} (${status})`, () => {
      assert.equal(toStatus(code), status);
    });
  }
  test('the table covers every code and nothing maps to OK or UNKNOWN', () => {
    assert.deepEqual(Object.keys(STATUS_BY_CODE).sort(), table.map(([c]) => c).sort());
    for (const s of Object.values(STATUS_BY_CODE)) {
      assert.notEqual(s, grpc.status.OK);
      assert.notEqual(s, grpc.status.UNKNOWN);
    }
  });
});

describe('toAgentError / toServiceError', () => {
  test('an AgentError keeps its code and message', () => {
    const e = new AgentError('NOT_FOUND', 'container x not found');
    assert.equal(toAgentError(e, undefined, 'M'), e);
  });
  test('a plain Error → INTERNAL carrying its text and the error as cause', () => {
    const cause = new TypeError('boom');
    const e = toAgentError(cause, undefined, 'EnsureContainer');
    assert.equal(e.code, 'INTERNAL');
    assert.equal(e.message, 'EnsureContainer: internal error: boom');
    assert.equal(e.cause, cause);
  });
  test('a non-AgentError after a cancel → CANCELLED; after a deadline → DEADLINE_EXCEEDED', () => {
    const c = new AbortController();
    c.abort(new DOMException('gone', 'AbortError'));
    assert.equal(toAgentError(new Error('socket closed'), c.signal, 'M').code, 'CANCELLED');
    assert.equal(toAgentError(new Error('x'), AbortSignal.abort(new DOMException('late', 'TimeoutError')), 'M').code, 'DEADLINE_EXCEEDED');
  });
  test('details are capped', () => {
    const se = toServiceError(new AgentError('INTERNAL', 'x'.repeat(MAX_DETAILS_CHARS * 2)));
    assert.equal(se.code, grpc.status.INTERNAL);
    assert.equal(se.details.length, MAX_DETAILS_CHARS);
  });
});

/** A stand-in for grpc-js's ServerUnaryCall: request, cancelled flag, deadline, events. */
class FakeCall<Req> extends EventEmitter {
  cancelled = false;
  readonly request: Req;
  readonly #deadline: grpc.Deadline;
  constructor(request: Req, deadline: grpc.Deadline = Infinity) {
    super();
    this.request = request;
    this.#deadline = deadline;
  }
  getDeadline(): grpc.Deadline {
    return this.#deadline;
  }
  /** What grpc-js does on a client cancel or a passed deadline. */
  cancel(): void {
    this.cancelled = true;
    this.emit('cancelled', 'cancelled');
  }
}

interface Answer {
  err: (Partial<grpc.StatusObject> & { code?: grpc.status }) | null;
  value: unknown;
}

function setup() {
  const capture = new LogCapture();
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const inflight = new InflightTracker();
  const deps = { log: captureLogger(capture), metrics, inflight };
  /** Runs `handler` through unary() for one fake call; resolves with every callback invocation. */
  const run = async <Req, Res>(
    handler: RpcHandler<Req, Res>,
    call: FakeCall<Req>,
    during?: (call: FakeCall<Req>) => void,
  ): Promise<Answer[]> => {
    const answers: Answer[] = [];
    let done!: () => void;
    const answered = new Promise<void>((r) => (done = r));
    const h = unary('TestMethod', handler, deps);
    h(call as unknown as grpc.ServerUnaryCall<Req, Res>, (err: Answer['err'], value: unknown) => {
      answers.push({ err, value });
      done();
    });
    during?.(call);
    await answered;
    // grpc-js 1.14 emits 'cancelled' after a normal completion too: it must change nothing.
    call.emit('cancelled', 'cancelled');
    await new Promise((r) => setImmediate(r));
    return answers;
  };
  const counter = async (code: string): Promise<number> => {
    const m = await metrics.rpcTotal.get();
    return m.values.find((v) => v.labels.method === 'TestMethod' && v.labels.code === code)?.value ?? 0;
  };
  return { capture, metrics, inflight, run, counter };
}

describe('unary()', () => {
  test('success: one answer, one log line with method/code/ms/ids, counted under OK', async () => {
    const { capture, run, counter, inflight } = setup();
    const answers = await run(
      () => Promise.resolve({ ok: true }),
      new FakeCall({ container_id: 'c1', owner_id: 'gw', payload: Buffer.from('secret-payload') }),
    );
    assert.equal(answers.length, 1);
    assert.equal(answers[0]!.err, null);
    assert.deepEqual(answers[0]!.value, { ok: true });
    const lines = capture.find('rpc');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!['method'], 'TestMethod');
    assert.equal(lines[0]!['code'], 'OK');
    assert.equal(lines[0]!['containerId'], 'c1');
    assert.equal(lines[0]!['owner'], 'gw');
    assert.equal(typeof lines[0]!['ms'], 'number');
    assert.ok(!capture.text.includes('secret-payload'), 'payloads are never logged');
    assert.equal(await counter('OK'), 1);
    assert.equal(inflight.count, 0);
  });

  test('an AgentError → its status and message, logged once with the error text', async () => {
    const { capture, run, counter } = setup();
    const answers = await run(
      () => Promise.reject(new AgentError('NOT_FOUND', 'container c1 not found')),
      new FakeCall({ container_id: 'c1' }),
    );
    assert.equal(answers.length, 1);
    assert.equal(answers[0]!.err?.code, grpc.status.NOT_FOUND);
    assert.equal(answers[0]!.err.details, 'container c1 not found');
    assert.equal(capture.find('rpc', { code: 'NOT_FOUND', error: 'container c1 not found' }).length, 1);
    assert.equal(await counter('NOT_FOUND'), 1);
  });

  test('a plain Error (or a synchronous throw) → INTERNAL, logged at error level with its stack', async () => {
    const { capture, run, counter } = setup();
    const answers = await run(() => {
      throw new TypeError('kaboom');
    }, new FakeCall({}));
    assert.equal(answers[0]!.err?.code, grpc.status.INTERNAL);
    assert.match(answers[0]!.err.details ?? '', /internal error: kaboom/);
    const lines = capture.find('rpc', { code: 'INTERNAL' });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!['level'], 50);
    assert.match(String((lines[0]!['err'] as { stack?: string } | undefined)?.stack), /TypeError: kaboom/);
    assert.equal(await counter('INTERNAL'), 1);
  });

  test('a client cancel aborts the signal (AbortError) and answers CANCELLED once', async () => {
    const { run, counter, capture } = setup();
    let seen: unknown;
    const handler: RpcHandler<object, object> = (_req, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          seen = ctx.signal.reason;
          reject(new Error('aborted by signal'));
        });
      });
    const answers = await run(handler, new FakeCall({}), (call) => {
      setImmediate(() => {
        call.cancel();
      });
    });
    assert.equal(answers.length, 1);
    assert.equal(answers[0]!.err?.code, grpc.status.CANCELLED);
    assert.equal((seen as DOMException).name, 'AbortError');
    assert.equal(await counter('CANCELLED'), 1);
    assert.equal(capture.find('rpc').length, 1);
  });

  test('a success that comes after the cancel is answered CANCELLED (what the client saw)', async () => {
    const { run } = setup();
    const handler: RpcHandler<object, object> = (_req, ctx) =>
      new Promise((resolve) => {
        ctx.signal.addEventListener('abort', () => {
          resolve({ late: true });
        });
      });
    const answers = await run(handler, new FakeCall({}), (call) => {
      setImmediate(() => {
        call.cancel();
      });
    });
    assert.equal(answers[0]!.err?.code, grpc.status.CANCELLED);
  });

  test('the deadline aborts the signal (TimeoutError) and answers DEADLINE_EXCEEDED', async () => {
    const { run, counter } = setup();
    let seen: unknown;
    const handler: RpcHandler<object, object> = (_req, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          seen = ctx.signal.reason;
          reject(new Error('stopped'));
        });
      });
    const answers = await run(handler, new FakeCall({}, Date.now() + 30));
    assert.equal(answers[0]!.err?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal((seen as DOMException).name, 'TimeoutError');
    assert.equal(await counter('DEADLINE_EXCEEDED'), 1);
  });

  test("grpc-js's own 'cancelled' at the deadline counts as DEADLINE_EXCEEDED, not CANCELLED", async () => {
    const { run } = setup();
    let reason: unknown;
    const handler: RpcHandler<object, object> = (_req, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          reason = ctx.signal.reason;
          reject(new Error('stopped'));
        });
      });
    const deadline = Date.now() + 30;
    const call = new FakeCall({}, deadline);
    // Schedule grpc-js's deadline cancel when unary() reads the deadline, i.e. before unary's
    // own timer exists: with the same delay it fires first.
    call.getDeadline = () => {
      setTimeout(() => {
        call.cancel();
      }, deadline - Date.now());
      return deadline;
    };
    const answers = await run(handler, call);
    assert.equal(answers[0]!.err?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal((reason as DOMException).name, 'TimeoutError');
  });

  test('a deadline as a Date is honoured too', async () => {
    const { run } = setup();
    const handler: RpcHandler<object, object> = (_req, ctx) =>
      new Promise((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          reject(new Error('stopped'));
        });
      });
    const answers = await run(handler, new FakeCall({}, new Date(Date.now() + 20)));
    assert.equal(answers[0]!.err?.code, grpc.status.DEADLINE_EXCEEDED);
  });

  test('an already-expired deadline → DEADLINE_EXCEEDED without running the handler', async () => {
    const { run } = setup();
    let ran = false;
    const answers = await run(
      () => {
        ran = true;
        return Promise.resolve({});
      },
      new FakeCall({}, Date.now() - 1),
    );
    assert.equal(ran, false);
    assert.equal(answers[0]!.err?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.match(answers[0]!.err.details ?? '', /deadline had already passed/);
  });

  test('a call cancelled before dispatch → CANCELLED without running the handler', async () => {
    const { run } = setup();
    let ran = false;
    const call = new FakeCall({});
    call.cancelled = true;
    const answers = await run(() => {
      ran = true;
      return Promise.resolve({});
    }, call);
    assert.equal(ran, false);
    assert.equal(answers[0]!.err?.code, grpc.status.CANCELLED);
  });

  test("'cancelled' after the answer (grpc-js 1.14 quirk) is ignored: the handler's signal stays quiet", async () => {
    const { run, counter } = setup();
    let signal: AbortSignal | undefined;
    const answers = await run((_req, ctx) => {
      signal = ctx.signal;
      return Promise.resolve({});
    }, new FakeCall({}));
    assert.equal(answers.length, 1);
    assert.equal(signal?.aborted, false);
    assert.equal(await counter('OK'), 1);
    assert.equal(await counter('CANCELLED'), 0);
  });

  test('annotate() adds fields to the one log line', async () => {
    const { capture, run } = setup();
    await run(
      (_req, ctx) => {
        ctx.annotate({ containerId: 'made-1', functionName: 'fn' });
        return Promise.resolve({});
      },
      new FakeCall({ owner_id: 'gw' }),
    );
    assert.equal(capture.find('rpc', { containerId: 'made-1', functionName: 'fn', owner: 'gw' }).length, 1);
  });

  test('long ids from an unvalidated request are shortened in the log', async () => {
    const { capture, run } = setup();
    await run(() => Promise.reject(new AgentError('INVALID_ARGUMENT', 'bad')), new FakeCall({ container_id: 'x'.repeat(10_000) }));
    const id = String(capture.find('rpc')[0]?.['containerId']);
    assert.ok(id.length < 200);
  });

  test('InflightTracker.drained() waits for running handlers', async () => {
    const { run, inflight } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const p = run(async () => {
      await gate;
      return {};
    }, new FakeCall({}));
    assert.equal(inflight.count, 1);
    let drained = false;
    const d = inflight.drained().then(() => (drained = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(drained, false);
    release();
    await p;
    await d;
    assert.equal(inflight.count, 0);
  });
});

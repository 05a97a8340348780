/**
 * WorkerProxy against real HTTP workers (node:http on 127.0.0.1:0): payload round trip, response
 * cap, deadlines, cancel, per-worker FIFO, header filtering, readiness retries and the
 * never-retry-after-send rule (docs/go-agent.md#w10), keep-alive reuse and closeWorker (docs/go-agent.md#w9).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Client } from 'undici';
import { setTimeout as delay } from 'node:timers/promises';
import { test, type TestContext } from 'node:test';
import { AgentError, type ErrorCode } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { AgentMetrics } from '../../../src/metrics.js';
import { WorkerProxy, type InvokeRequest, type InvokerClock, type InvokeTarget } from '../../../src/proxy/invoke.js';

const RIE_PATH = '/2015-03-31/functions/function/invocations';

interface Worker {
  readonly port: number;
  readonly target: InvokeTarget;
  /** Request bodies in arrival order (counted once the body was fully read). */
  readonly received: Buffer[];
  /** Request headers in arrival order. */
  readonly headers: http.IncomingHttpHeaders[];
  /** TCP connections accepted. */
  connections: number;
  /** Requests whose connection closed before a response was finished. */
  aborted: number;
  maxConcurrent: number;
  readonly closedEvents: EventTarget;
  close(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, w: Worker) => void;

let nextId = 0;

/** Starts a worker; `handler` runs once the request body is read. Closed after the test. */
async function startWorker(
  t: TestContext,
  handler: Handler,
  { port = 0, keepAliveTimeoutMs }: { port?: number; keepAliveTimeoutMs?: number } = {},
): Promise<Worker> {
  const server = http.createServer();
  if (keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = keepAliveTimeoutMs;
  let active = 0;
  const w: Worker = {
    port: 0,
    target: { id: `w${++nextId}`, ipAddress: '127.0.0.1', port: 0 },
    received: [],
    headers: [],
    connections: 0,
    aborted: 0,
    maxConcurrent: 0,
    closedEvents: new EventTarget(),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
  t.after(() => w.close());
  server.on('connection', () => {
    w.connections++;
  });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    active++;
    w.maxConcurrent = Math.max(w.maxConcurrent, active);
    res.on('close', () => {
      active--;
      if (!res.writableFinished) {
        w.aborted++;
        w.closedEvents.dispatchEvent(new Event('aborted'));
      }
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      w.received.push(body);
      w.headers.push(req.headers);
      handler(req, res, body, w);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  Object.assign(w, { port: actual, target: { ...w.target, port: actual } });
  return w;
}

/** Resolves when the worker next sees a request's connection close unanswered. */
function nextAbort(w: Worker): Promise<void> {
  return new Promise((resolve) => {
    w.closedEvents.addEventListener(
      'aborted',
      () => {
        resolve();
      },
      { once: true },
    );
  });
}

interface MakeOptions {
  maxResponseBytes?: number;
  defaultTimeoutMs?: number;
  metrics?: AgentMetrics;
  dispatcherFactory?: (origin: string) => Client;
  clock?: InvokerClock;
}

function makeInvoker(t: TestContext, opts: MakeOptions = {}): WorkerProxy {
  const inv = new WorkerProxy({
    maxResponseBytes: opts.maxResponseBytes ?? 10 * 1024 * 1024,
    defaultTimeoutMs: opts.defaultTimeoutMs ?? 5_000,
    log: silentLogger(),
    metrics: opts.metrics,
    dispatcherFactory: opts.dispatcherFactory,
    clock: opts.clock,
  });
  t.after(() => inv.close());
  return inv;
}

function request(payload: Buffer | string, more: Partial<InvokeRequest> = {}): InvokeRequest {
  return { path: RIE_PATH, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload), headers: {}, timeoutMs: 2_000, ...more };
}

const noSignal = (): { signal: AbortSignal } => ({ signal: new AbortController().signal });

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<AgentError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AgentError, `expected AgentError, got ${String(err)}`);
    assert.equal(err.code, code, `code (message: ${err.message})`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, got success`);
}

const echo: Handler = (req, res, body) => {
  res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream', 'content-length': String(body.length) });
  res.end(body);
};

test('a 6 MB payload is echoed back intact over one keep-alive connection', async (t) => {
  const w = await startWorker(t, echo);
  const inv = makeInvoker(t);
  const payload = Buffer.alloc(6 * 1000 * 1000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
  const res = await inv.invoke(w.target, request(payload, { headers: { 'Content-Type': 'application/json' } }), noSignal());
  assert.equal(res.statusCode, 200);
  assert.ok(res.body.equals(payload));
  assert.equal(res.headers['content-type'], 'application/json');
  assert.equal(res.headers['content-length'], String(payload.length));
  // Sequential calls reuse the worker's connection (docs/go-agent.md#w9: one dispatcher per worker).
  await inv.invoke(w.target, request('{}'), noSignal());
  await inv.invoke(w.target, request('{}'), noSignal());
  assert.equal(w.connections, 1);
  assert.equal(w.received.length, 3);
});

test('a response body of exactly the cap passes; cap+1 → RESOURCE_EXHAUSTED (content-length and chunked)', async (t) => {
  const cap = 64 * 1024;
  const w = await startWorker(t, (req, res) => {
    const n = Number(req.headers['x-size']);
    if (req.headers['x-chunked'] === '1') {
      res.writeHead(200); // no content-length: chunked
      const half = Math.floor(n / 2);
      res.write(Buffer.alloc(half, 1));
      setTimeout(() => res.end(Buffer.alloc(n - half, 2)), 5);
    } else {
      res.writeHead(200, { 'content-length': String(n) });
      res.end(Buffer.alloc(n, 3));
    }
  });
  const inv = makeInvoker(t, { maxResponseBytes: cap });
  for (const chunked of ['0', '1']) {
    const ok = await inv.invoke(w.target, request('x', { headers: { 'x-size': String(cap), 'x-chunked': chunked } }), noSignal());
    assert.equal(ok.body.length, cap, `exact cap, chunked=${chunked}`);
    const err = await rejectsWith(
      inv.invoke(w.target, request('x', { headers: { 'x-size': String(cap + 1), 'x-chunked': chunked } }), noSignal()),
      'RESOURCE_EXHAUSTED',
      /exceeds the limit of 65536 bytes/,
    );
    if (chunked === '0') assert.match(err.message, /content-length/);
  }
  // The worker stays usable after an over-cap answer (the dropped socket is replaced).
  const again = await inv.invoke(w.target, request('x', { headers: { 'x-size': '10' } }), noSignal());
  assert.equal(again.body.length, 10);
});

test('an endless chunked response stops being read at the cap → RESOURCE_EXHAUSTED', async (t) => {
  const w = await startWorker(t, (_req, res) => {
    res.writeHead(200);
    const chunk = Buffer.alloc(16 * 1024, 7);
    const timer = setInterval(() => res.write(chunk), 1);
    res.on('close', () => {
      clearInterval(timer);
    });
  });
  const inv = makeInvoker(t, { maxResponseBytes: 100 * 1024 });
  const closed = nextAbort(w);
  const started = performance.now();
  await rejectsWith(inv.invoke(w.target, request('x'), noSignal()), 'RESOURCE_EXHAUSTED');
  await closed; // the worker saw the connection go
  assert.ok(performance.now() - started < 1_000);
});

test('a worker slower than timeout_ms → DEADLINE_EXCEEDED on time, and the request is aborted', async (t) => {
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t);
  const closed = nextAbort(w);
  const started = performance.now();
  await rejectsWith(
    inv.invoke(w.target, request('x', { timeoutMs: 300 }), noSignal()),
    'DEADLINE_EXCEEDED',
    /no complete response .* 300 ms/,
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 295 && elapsed < 450, `elapsed ${elapsed} ms`);
  await closed;
  assert.equal(w.received.length, 1);
});

test('timeout_ms ≤ 0 uses the default timeout', async (t) => {
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t, { defaultTimeoutMs: 200 });
  const started = performance.now();
  await rejectsWith(inv.invoke(w.target, request('x', { timeoutMs: 0 }), noSignal()), 'DEADLINE_EXCEEDED');
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 195 && elapsed < 350, `elapsed ${elapsed} ms`);
});

test('client cancel → CANCELLED and the worker sees its connection close', async (t) => {
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t);
  const ac = new AbortController();
  const closed = nextAbort(w);
  setTimeout(() => {
    ac.abort();
  }, 100);
  const started = performance.now();
  await rejectsWith(inv.invoke(w.target, request('x', { timeoutMs: 5_000 }), { signal: ac.signal }), 'CANCELLED');
  assert.ok(performance.now() - started < 300);
  await closed;
});

test('a caller signal that times out (gRPC deadline) → DEADLINE_EXCEEDED', async (t) => {
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t);
  await rejectsWith(inv.invoke(w.target, request('x', { timeoutMs: 5_000 }), { signal: AbortSignal.timeout(100) }), 'DEADLINE_EXCEEDED');
});

test('an already-aborted caller signal → CANCELLED, nothing sent', async (t) => {
  const w = await startWorker(t, echo);
  const inv = makeInvoker(t);
  const ac = new AbortController();
  ac.abort();
  await rejectsWith(inv.invoke(w.target, request('x'), { signal: ac.signal }), 'CANCELLED');
  await delay(50);
  assert.equal(w.connections, 0);
});

test('10 concurrent invokes to one worker run one at a time, in order, and all succeed', async (t) => {
  const w = await startWorker(t, (_req, res, body) => {
    setTimeout(() => res.end(body), 15);
  });
  const inv = makeInvoker(t);
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => inv.invoke(w.target, request(`payload-${i}`), noSignal())));
  assert.deepEqual(
    results.map((r) => r.body.toString()),
    Array.from({ length: 10 }, (_, i) => `payload-${i}`),
  );
  assert.equal(w.maxConcurrent, 1);
  assert.deepEqual(
    w.received.map(String),
    Array.from({ length: 10 }, (_, i) => `payload-${i}`),
  );
});

test('different workers are not serialised against each other', async (t) => {
  const slow = await startWorker(t, (_req, res) => setTimeout(() => res.end('slow'), 300));
  const fast = await startWorker(t, echo);
  const inv = makeInvoker(t);
  const slowCall = inv.invoke(slow.target, request('a'), noSignal());
  await delay(20);
  const started = performance.now();
  await inv.invoke(fast.target, request('b'), noSignal());
  assert.ok(performance.now() - started < 150);
  await slowCall;
});

test('a queued request whose timeout passes fails DEADLINE_EXCEEDED and is never sent', async (t) => {
  const w = await startWorker(t, (_req, res, body) => {
    setTimeout(() => res.end(body), 400);
  });
  const inv = makeInvoker(t);
  const first = inv.invoke(w.target, request('first', { timeoutMs: 2_000 }), noSignal());
  await delay(20);
  const started = performance.now();
  await rejectsWith(
    inv.invoke(w.target, request('second', { timeoutMs: 100 }), noSignal()),
    'DEADLINE_EXCEEDED',
    /waiting behind an earlier invocation .*not sent/,
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 95 && elapsed < 250, `elapsed ${elapsed} ms`);
  // A queued call cancelled by its client leaves the queue too.
  const ac = new AbortController();
  const third = inv.invoke(w.target, request('third'), { signal: ac.signal });
  ac.abort();
  await rejectsWith(third, 'CANCELLED');
  assert.equal((await first).body.toString(), 'first');
  const fourth = await inv.invoke(w.target, request('fourth'), noSignal());
  assert.equal(fourth.body.toString(), 'fourth');
  await delay(50);
  assert.deepEqual(w.received.map(String), ['first', 'fourth']);
});

test('hop-by-hop headers are dropped both ways; Host/Content-Length are the agent’s; multi-value headers are joined', async (t) => {
  const w = await startWorker(t, (_req, res) => {
    res.setHeader('Connection', 'keep-alive, X-Resp-Hop');
    res.setHeader('X-Resp-Hop', 'secret');
    res.setHeader('Proxy-Authenticate', 'Basic');
    res.setHeader('Trailer', 'X-Checksum');
    res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2']);
    res.setHeader('X-Multi', ['v1', 'v2']);
    res.setHeader('X-Amz-Function-Error', 'Unhandled');
    res.writeHead(200); // chunked: transfer-encoding is set by node
    res.addTrailers({ 'X-Checksum': 'abc' });
    res.end('{"errorType":"Boom","errorMessage":"bad"}');
  });
  const inv = makeInvoker(t);
  const res = await inv.invoke(
    w.target,
    request('{"a":1}', {
      headers: {
        'Content-Type': 'application/json',
        'X-Amzn-Trace-Id': 'Root=1-abc',
        'X-Amz-Client-Context': 'eyJjdXN0b20iOnt9fQ==',
        Connection: 'X-Req-Hop',
        'X-Req-Hop': 'secret',
        'Keep-Alive': 'timeout=5',
        'Proxy-Authorization': 'Basic eA==',
        'Proxy-Connection': 'keep-alive',
        TE: 'trailers',
        Trailer: 'X-Foo',
        'Transfer-Encoding': 'chunked',
        Upgrade: 'h2c',
        Host: 'evil.example:80',
        'Content-Length': '99999',
        Expect: '100-continue',
      },
    }),
    noSignal(),
  );
  const sent = w.headers[0]!;
  assert.equal(sent['content-type'], 'application/json');
  assert.equal(sent['x-amzn-trace-id'], 'Root=1-abc');
  assert.equal(sent['x-amz-client-context'], 'eyJjdXN0b20iOnt9fQ==');
  assert.equal(sent.host, `127.0.0.1:${w.port}`);
  assert.equal(sent['content-length'], '7');
  assert.equal(sent.connection, 'keep-alive'); // undici's own, not the request's
  for (const h of [
    'x-req-hop',
    'keep-alive',
    'proxy-authorization',
    'proxy-connection',
    'te',
    'trailer',
    'transfer-encoding',
    'upgrade',
    'expect',
  ]) {
    assert.equal(sent[h], undefined, `request header ${h} must be dropped`);
  }
  assert.equal(res.statusCode, 200);
  for (const h of ['connection', 'x-resp-hop', 'keep-alive', 'proxy-authenticate', 'trailer', 'transfer-encoding']) {
    assert.equal(res.headers[h], undefined, `response header ${h} must be dropped`);
  }
  assert.equal(res.headers['set-cookie'], 'a=1; Path=/, b=2');
  assert.equal(res.headers['x-multi'], 'v1, v2');
  // Function errors pass through untouched.
  assert.equal(res.headers['x-amz-function-error'], 'Unhandled');
  assert.equal(res.body.toString(), '{"errorType":"Boom","errorMessage":"bad"}');
});

test('4xx and 5xx answers are normal results with their status, headers and body', async (t) => {
  const w = await startWorker(t, (req, res) => {
    const status = Number(req.headers['x-status']);
    res.writeHead(status, { 'content-type': 'application/json', 'x-amz-function-error': 'Unhandled' });
    res.end(JSON.stringify({ errorType: 'E', status }));
  });
  const inv = makeInvoker(t);
  for (const status of [400, 404, 413, 500, 502, 503]) {
    const res = await inv.invoke(w.target, request('x', { headers: { 'x-status': String(status) } }), noSignal());
    assert.equal(res.statusCode, status);
    assert.equal(res.headers['x-amz-function-error'], 'Unhandled');
    assert.deepEqual(JSON.parse(res.body.toString()), { errorType: 'E', status });
  }
});

test('readiness: a worker that starts listening 300 ms after the invoke began is reached', async (t) => {
  // Reserve a port, free it, and listen on it later: connections are refused meanwhile.
  const probe = http.createServer();
  await new Promise<void>((resolve) =>
    probe.listen(0, '127.0.0.1', () => {
      resolve();
    }),
  );
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) =>
    probe.close(() => {
      resolve();
    }),
  );

  const inv = makeInvoker(t);
  const started = performance.now();
  const call = inv.invoke({ id: 'late', ipAddress: '127.0.0.1', port }, request('hello', { timeoutMs: 3_000 }), noSignal());
  await delay(300);
  const w = await startWorker(t, echo, { port });
  const res = await call;
  const elapsed = performance.now() - started;
  assert.equal(res.body.toString(), 'hello');
  assert.ok(elapsed >= 300 && elapsed < 800, `elapsed ${elapsed} ms`);
  assert.deepEqual(w.received.map(String), ['hello']);
});

test('readiness: a worker that never listens → DEADLINE_EXCEEDED saying the request was not sent', async (t) => {
  const probe = http.createServer();
  await new Promise<void>((resolve) =>
    probe.listen(0, '127.0.0.1', () => {
      resolve();
    }),
  );
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) =>
    probe.close(() => {
      resolve();
    }),
  );
  const inv = makeInvoker(t);
  const started = performance.now();
  const err = await rejectsWith(
    inv.invoke({ id: 'never', ipAddress: '127.0.0.1', port }, request('x', { timeoutMs: 250 }), noSignal()),
    'DEADLINE_EXCEEDED',
    /did not accept the request within 250 ms .*ECONNREFUSED.*not sent/,
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 245 && elapsed < 400, `elapsed ${elapsed} ms`);
  assert.ok(err.cause !== undefined);
});

test('a worker that drops the connection after reading the request → INTERNAL, and the payload is delivered exactly once', async (t) => {
  let drop = true;
  const w = await startWorker(t, (req, res, body) => {
    if (drop) req.socket.destroy();
    else res.end(body);
  });
  const inv = makeInvoker(t);
  const err = await rejectsWith(
    inv.invoke(w.target, request('once', { timeoutMs: 1_000 }), noSignal()),
    'INTERNAL',
    /after the request was sent/,
  );
  assert.notEqual(err.code, 'UNAVAILABLE');
  assert.notEqual(err.code, 'DEADLINE_EXCEEDED');
  await delay(200);
  assert.deepEqual(w.received.map(String), ['once']);
  // The worker's lane recovers with a new connection.
  drop = false;
  const res = await inv.invoke(w.target, request('twice'), noSignal());
  assert.equal(res.body.toString(), 'twice');
  assert.deepEqual(w.received.map(String), ['once', 'twice']);
});

test('a worker that resets mid-body → INTERNAL, never retried', async (t) => {
  const w = await startWorker(t, (req, res) => {
    res.writeHead(200, { 'content-length': '1000' });
    res.write('partial');
    setTimeout(() => req.socket.destroy(), 10);
  });
  const inv = makeInvoker(t);
  await rejectsWith(inv.invoke(w.target, request('x'), noSignal()), 'INTERNAL');
  await delay(100);
  assert.equal(w.received.length, 1);
});

/** A dispatcher whose TCP connects complete only after `ms` (a slow SYN/ACK). */
function slowConnectFactory(ms: number): (origin: string) => Client {
  return (origin) =>
    new Client(origin, {
      pipelining: 1,
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: (opts, cb) => {
        setTimeout(() => {
          const socket = net.connect(Number(opts.port), opts.hostname);
          socket.once('connect', () => {
            cb(null, socket);
          });
          socket.once('error', (err) => {
            cb(err, null);
          });
        }, ms);
      },
    });
}

test('a request abandoned while its connect is in progress is never written once the connect completes', async (t) => {
  const w = await startWorker(t, echo);
  const inv = makeInvoker(t, { dispatcherFactory: slowConnectFactory(200) });
  const started = performance.now();
  await rejectsWith(inv.invoke(w.target, request('late', { timeoutMs: 80 }), noSignal()), 'DEADLINE_EXCEEDED', /not sent/);
  assert.ok(performance.now() - started < 180);
  // Cancel while connecting, then queue another call right behind it in undici.
  const ac = new AbortController();
  const cancelled = inv.invoke(w.target, request('cancelled'), { signal: ac.signal });
  await delay(20);
  ac.abort();
  await rejectsWith(cancelled, 'CANCELLED');
  const res = await inv.invoke(w.target, request('sent', { timeoutMs: 2_000 }), noSignal());
  assert.equal(res.body.toString(), 'sent');
  await delay(300); // every pending connect has completed by now
  assert.deepEqual(w.received.map(String), ['sent']);
  assert.equal(w.maxConcurrent, 1);
});

test('a worker that closes idle keep-alive connections is simply reconnected', async (t) => {
  const w = await startWorker(t, echo, { keepAliveTimeoutMs: 50 });
  const inv = makeInvoker(t);
  assert.equal((await inv.invoke(w.target, request('a'), noSignal())).body.toString(), 'a');
  await delay(200); // the worker has closed the idle connection by now
  assert.equal((await inv.invoke(w.target, request('b'), noSignal())).body.toString(), 'b');
  assert.equal(w.connections, 2);
  assert.deepEqual(w.received.map(String), ['a', 'b']);
});

test('closeWorker fails the running and queued calls FAILED_PRECONDITION and closes the connection', async (t) => {
  let answer = false;
  const w = await startWorker(t, (_req, res, body) => {
    if (answer) res.end(body);
  });
  const inv = makeInvoker(t);
  const running = inv.invoke(w.target, request('running', { timeoutMs: 5_000 }), noSignal());
  await delay(50);
  const queued = inv.invoke(w.target, request('queued', { timeoutMs: 5_000 }), noSignal());
  await delay(20);
  const closed = nextAbort(w);
  const outcomes = [
    rejectsWith(running, 'FAILED_PRECONDITION', /worker destroyed/),
    rejectsWith(queued, 'FAILED_PRECONDITION', /worker destroyed/),
  ];
  const started = performance.now();
  await inv.closeWorker(w.target.id);
  await Promise.all(outcomes);
  assert.ok(performance.now() - started < 300);
  await closed;
  await delay(50);
  assert.deepEqual(w.received.map(String), ['running']);
  // Unknown ids are a no-op; a later invoke opens a new connection.
  await inv.closeWorker('nobody');
  answer = true;
  const res = await inv.invoke(w.target, request('after'), noSignal());
  assert.equal(res.body.toString(), 'after');
  assert.equal(w.connections, 2);
});

test('close() cancels calls in progress and refuses later ones with CANCELLED', async (t) => {
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t);
  const running = inv.invoke(w.target, request('x', { timeoutMs: 5_000 }), noSignal());
  await delay(30);
  const outcome = rejectsWith(running, 'CANCELLED', /agent shutting down/);
  await inv.close();
  await outcome;
  await rejectsWith(inv.invoke(w.target, request('y'), noSignal()), 'CANCELLED');
});

test('bad path, header or target are refused before anything is sent', async (t) => {
  const w = await startWorker(t, echo);
  const inv = makeInvoker(t);
  await rejectsWith(inv.invoke(w.target, request('x', { path: 'no-slash' }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke(w.target, request('x', { path: '//evil.example/x' }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke(w.target, request('x', { path: 'http://evil.example/x' }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke(w.target, request('x', { path: '/a b' }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke(w.target, request('x', { headers: { 'bad name': 'v' } }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke(w.target, request('x', { headers: { 'x-a': 'v\r\nx-injected: 1' } }), noSignal()), 'INVALID_ARGUMENT');
  await rejectsWith(inv.invoke({ ...w.target, ipAddress: '' }, request('x'), noSignal()), 'FAILED_PRECONDITION');
  await rejectsWith(inv.invoke({ ...w.target, ipAddress: 'evil.example' }, request('x'), noSignal()), 'FAILED_PRECONDITION');
  await rejectsWith(inv.invoke({ ...w.target, port: 0 }, request('x'), noSignal()), 'FAILED_PRECONDITION');
  assert.equal(w.connections, 0);
  // A path with a query string is fine.
  const res = await inv.invoke(w.target, request('q', { path: `${RIE_PATH}?x=1` }), noSignal());
  assert.equal(res.body.toString(), 'q');
});

test('metrics: duration by code, request and response bytes', async (t) => {
  const w = await startWorker(t, echo);
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const inv = makeInvoker(t, { metrics, maxResponseBytes: 10 });
  await inv.invoke(w.target, request('12345'), noSignal());
  await rejectsWith(inv.invoke(w.target, request('0123456789ab'), noSignal()), 'RESOURCE_EXHAUSTED');
  const text = await metrics.registry.metrics();
  assert.match(text, /esb_agent_invoke_duration_seconds_count\{code="OK"\} 1/);
  assert.match(text, /esb_agent_invoke_duration_seconds_count\{code="RESOURCE_EXHAUSTED"\} 1/);
  assert.match(text, /esb_agent_invoke_request_bytes_count 2/);
  assert.match(text, /esb_agent_invoke_request_bytes_sum 17/);
  assert.match(text, /esb_agent_invoke_response_bytes_count 1/);
  assert.match(text, /esb_agent_invoke_response_bytes_sum 5/);
});

/** Time that moves only when told to. */
class FakeClock implements InvokerClock {
  #now = 0;
  readonly #timers = new Set<{ at: number; fn: () => void }>();
  now(): number {
    return this.#now;
  }
  setTimer(fn: () => void, ms: number): () => void {
    const timer = { at: this.#now + ms, fn };
    this.#timers.add(timer);
    return () => {
      this.#timers.delete(timer);
    };
  }
  get pending(): number {
    return this.#timers.size;
  }
  advance(ms: number): void {
    this.#now += ms;
    for (const timer of [...this.#timers].sort((a, b) => a.at - b.at)) {
      if (timer.at > this.#now) break;
      this.#timers.delete(timer);
      timer.fn();
    }
  }
}

test('with an injected clock, 30 s deadlines fire without real waiting (after send, and while not ready)', async (t) => {
  const clock = new FakeClock();
  const w = await startWorker(t, () => {
    /* never answers */
  });
  const inv = makeInvoker(t, { clock });
  const sent = inv.invoke(w.target, request('x', { timeoutMs: 30_000 }), noSignal());
  const sentOutcome = rejectsWith(sent, 'DEADLINE_EXCEEDED', /no complete response .* 30000 ms/);
  while (w.received.length === 0) await delay(5);
  clock.advance(30_000);
  await sentOutcome;

  const probe = http.createServer();
  await new Promise<void>((resolve) =>
    probe.listen(0, '127.0.0.1', () => {
      resolve();
    }),
  );
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) =>
    probe.close(() => {
      resolve();
    }),
  );
  const refused = inv.invoke({ id: 'fake-clock-refused', ipAddress: '127.0.0.1', port }, request('x', { timeoutMs: 30_000 }), noSignal());
  const refusedOutcome = rejectsWith(
    refused,
    'DEADLINE_EXCEEDED',
    /did not accept the request within 30000 ms \(1 connection attempt; last error: .*ECONNREFUSED/,
  );
  while (clock.pending < 2) await delay(5); // the deadline + the first backoff sleep
  clock.advance(30_000);
  await refusedOutcome;
});

/**
 * The RIE-like test worker (test/fixtures/worker/worker.mjs), run as a local process on
 * 127.0.0.1: its actions, one-at-a-time processing and the honest counters the agent's tests
 * rely on (deliveries, peak concurrency, aborted requests).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, waitFor } from '../harness/process.js';

const WORKER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'worker', 'worker.mjs');
const INVOKE = '/2015-03-31/functions/function/invocations';

interface Worker {
  readonly url: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | string>;
  readonly output: () => string;
}

interface Stats {
  deliveries: number;
  deliveriesById: Record<string, number>;
  maxConcurrency: number;
  inFlight: number;
  aborted: number;
  abortedIds: string[];
  ticks: number;
  startedAt: number;
  now: number;
  pid: number;
  env: Record<string, string>;
  hostname: string;
}

async function startWorker(t: TestContext): Promise<Worker> {
  let child: ChildProcess | undefined = undefined;
  t.after(() => {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const port = await freePort();
  let out = '';
  const c = spawn(process.execPath, [WORKER], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', ESB_WORKER_MARK: 'unit-test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = c;
  c.stdout.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) => {
    c.once('exit', (code, signal) => {
      resolve(code ?? signal ?? -1);
    });
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    'worker to listen',
    async () => {
      if (c.exitCode !== null) throw new Error(`worker exited: ${out}`);
      const res = await fetch(`${url}/`);
      await res.body?.cancel();
      return res.status === 404;
    },
    10_000,
    20,
  );
  return { url, child: c, exited, output: () => out };
}

function invoke(w: Worker, body: unknown, init: { headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
  const raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return fetch(w.url + INVOKE, {
    method: 'POST',
    body: raw,
    headers: { 'Content-Type': typeof body === 'object' && !Buffer.isBuffer(body) ? 'application/json' : 'text/plain', ...init.headers },
    ...(init.signal ? { signal: init.signal } : {}),
  });
}

async function stats(w: Worker): Promise<Stats> {
  const res = await invoke(w, { action: 'stats' });
  assert.equal(res.status, 200);
  return (await res.json()) as Stats;
}

test('echo returns the raw body and its content type; non-JSON bodies are echoed too', async (t) => {
  const w = await startWorker(t);
  const payload = '{"action":"echo",  "id":"e1", "nested": {"a": [1,2,3]}}';
  const r1 = await invoke(w, payload, { headers: { 'Content-Type': 'application/json; charset=utf-8' } });
  assert.equal(r1.status, 200);
  assert.equal(r1.headers.get('content-type'), 'application/json; charset=utf-8');
  assert.equal(await r1.text(), payload);

  const r2 = await invoke(w, 'plain text, not JSON');
  assert.equal(r2.status, 200);
  assert.equal(r2.headers.get('content-type'), 'text/plain');
  assert.equal(await r2.text(), 'plain text, not JSON');

  const binary = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
  const r3 = await fetch(w.url + INVOKE, { method: 'POST', body: binary, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.deepEqual(Buffer.from(await r3.arrayBuffer()), binary);

  const r4 = await invoke(w, { hello: 'world' });
  assert.deepEqual(await r4.json(), { hello: 'world' });
});

test('bytes returns exactly n bytes', async (t) => {
  const w = await startWorker(t);
  for (const n of [0, 1, 65_536, 1_000_003, 5 * 1024 * 1024 + 7]) {
    const res = await invoke(w, { action: 'bytes', n });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(n));
    const buf = Buffer.from(await res.arrayBuffer());
    assert.equal(buf.length, n, `n=${n}`);
    assert.ok(
      buf.every((b) => b === 0x78),
      'all bytes are "x"',
    );
  }
});

test('error, status, headers, unknown paths', async (t) => {
  const w = await startWorker(t);
  const e = await invoke(w, { action: 'error', message: 'boom' });
  assert.equal(e.status, 200);
  assert.equal(e.headers.get('x-amz-function-error'), 'Unhandled');
  assert.deepEqual(await e.json(), { errorType: 'TestError', errorMessage: 'boom' });

  for (const code of [201, 400, 404, 502, 503]) {
    const s = await invoke(w, { action: 'status', code, id: `s${code}` });
    assert.equal(s.status, code);
    assert.deepEqual(await s.json(), { status: code, id: `s${code}` });
  }

  const h = await invoke(w, { action: 'headers' }, { headers: { 'X-Amz-Client-Context': 'ctx', 'X-Amzn-Trace-Id': 'Root=1-abc' } });
  assert.equal(h.status, 200);
  assert.equal(h.headers.get('x-multi'), 'one, two');
  assert.deepEqual(h.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/']);
  const echoed = (await h.json()) as { headers: Record<string, string> };
  assert.equal(echoed.headers['x-amz-client-context'], 'ctx');
  assert.equal(echoed.headers['x-amzn-trace-id'], 'Root=1-abc');

  const nf = await fetch(`${w.url}/2015-03-31/functions/other/invocations`, { method: 'POST', body: '{}' });
  assert.equal(nf.status, 404);
  await nf.body?.cancel();
  const get = await fetch(w.url + INVOKE);
  assert.equal(get.status, 405);
  await get.body?.cancel();

  const cpu = await invoke(w, { action: 'cpu', ms: 30 });
  assert.equal(cpu.status, 200);
  await cpu.body?.cancel();
  const oom = await invoke(w, { action: 'oom', limitMb: 32 });
  assert.deepEqual(await oom.json(), { ok: true, action: 'oom', allocatedMb: 32, killed: false });

  // One log line per request on stdout.
  await waitFor(
    'log lines',
    () =>
      w
        .output()
        .split('\n')
        .filter((l) => l.includes(' POST ') || l.includes(' GET ')).length >= 12,
    2000,
  );
});

test('five parallel invocations: all delivered once, processed one at a time, peak concurrency 5', async (t) => {
  const w = await startWorker(t);
  const ids = ['p0', 'p1', 'p2', 'p3', 'p4'];
  const results = await Promise.all(
    ids.map(async (id) => {
      const res = await invoke(w, { action: 'sleep', ms: 150, id });
      assert.equal(res.status, 200);
      return (await res.json()) as { id: string; started: number; ended: number };
    }),
  );
  assert.deepEqual(results.map((r) => r.id).sort(), ids);
  const spans = results.map((r) => [r.started, r.ended] as const).sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) assert.ok(spans[i]![0] >= spans[i - 1]![1], `invocations overlap: ${JSON.stringify(spans)}`);

  const s = await stats(w);
  assert.equal(s.maxConcurrency, 5);
  assert.equal(s.deliveries, 6, 'five sleeps plus this stats call');
  assert.deepEqual(s.deliveriesById, { p0: 1, p1: 1, p2: 1, p3: 1, p4: 1 });
  assert.equal(s.inFlight, 1, 'only the stats call itself');
  assert.equal(s.aborted, 0);
  assert.equal(s.pid, w.child.pid);
  assert.equal(s.env['ESB_WORKER_MARK'], 'unit-test');
  assert.ok(s.ticks > 0 && s.startedAt <= s.now);
  const later = await stats(w);
  assert.ok(later.ticks >= s.ticks);
});

test('a client that aborts a sleep is counted as aborted, and the invocation was delivered once', async (t) => {
  const w = await startWorker(t);
  const ac = new AbortController();
  const pending = invoke(w, { action: 'sleep', ms: 800, id: 'abort-me' }, { signal: ac.signal });
  // Let the body arrive (the sleep is then running), then go away.
  await new Promise((r) => setTimeout(r, 150));
  ac.abort();
  await assert.rejects(pending, (err: Error) => err.name === 'AbortError');
  const s = await stats(w);
  assert.equal(s.aborted, 1);
  assert.deepEqual(s.abortedIds, ['abort-me']);
  assert.equal(s.deliveriesById['abort-me'], 1);
  assert.equal(s.inFlight, 1);
});

test('exit answers, then the process exits with the code; SIGTERM exits 0', async (t) => {
  const w = await startWorker(t);
  const res = await invoke(w, { action: 'exit', code: 3 });
  assert.equal(res.status, 200);
  assert.equal(((await res.json()) as { exitCode: number }).exitCode, 3);
  assert.equal(await w.exited, 3);

  const w2 = await startWorker(t);
  w2.child.kill('SIGTERM');
  assert.equal(await w2.exited, 0);
});

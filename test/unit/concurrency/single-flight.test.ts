import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { SingleFlight } from '../../../src/concurrency/single-flight.js';

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const never = new AbortController().signal;

test('concurrent runs of one key share a single call', async () => {
  const sf = new SingleFlight<number>(10_000);
  let calls = 0;
  const d = deferred<number>();
  const fn = (): Promise<number> => {
    calls++;
    return d.promise;
  };
  const all = Promise.all(Array.from({ length: 8 }, () => sf.run('k', fn, never, 'x')));
  await new Promise((r) => setImmediate(r));
  d.resolve(42);
  assert.deepEqual(await all, Array(8).fill(42));
  assert.equal(calls, 1);
  assert.equal(sf.size, 0, 'finished runs are forgotten');
  assert.equal(await sf.run('k', () => Promise.resolve(7), never, 'x'), 7, 'a later call starts a new run');
});

test('one caller aborting stops its wait only; the run goes on for the others', async () => {
  const sf = new SingleFlight<string>(10_000);
  const d = deferred<string>();
  let runSignal: AbortSignal | undefined;
  const fn = (s: AbortSignal): Promise<string> => {
    runSignal = s;
    return d.promise;
  };
  const ac = new AbortController();
  const quitter = sf.run('k', fn, ac.signal, 'pull k');
  const stayer = sf.run('k', fn, never, 'pull k');
  ac.abort();
  await assert.rejects(quitter, (e: unknown) => e instanceof AgentError && e.code === 'CANCELLED');
  assert.equal(runSignal?.aborted, false);
  d.resolve('done');
  assert.equal(await stayer, 'done');
});

test('a caller whose deadline passes gets DEADLINE_EXCEEDED', async () => {
  const sf = new SingleFlight<string>(10_000);
  const d = deferred<string>();
  // AbortSignal.timeout's timer does not keep the event loop alive: hold it open meanwhile.
  const keepAlive = setInterval(() => undefined, 1000);
  const p = sf.run('k', () => d.promise, AbortSignal.timeout(20), 'pull k');
  await assert.rejects(p, (e: unknown) => e instanceof AgentError && e.code === 'DEADLINE_EXCEEDED');
  clearInterval(keepAlive);
  d.resolve('late');
});

test('when every caller gives up the run is cancelled, and a new caller starts afresh', async () => {
  const sf = new SingleFlight<string>(10_000);
  let runSignal: AbortSignal | undefined;
  let calls = 0;
  const fn = (s: AbortSignal): Promise<string> => {
    calls++;
    runSignal = s;
    return new Promise((_resolve, reject) => {
      s.addEventListener('abort', () => {
        reject(new AgentError('CANCELLED', 'run cancelled'));
      });
    });
  };
  const a = new AbortController();
  const b = new AbortController();
  const pa = sf.run('k', fn, a.signal, 'x');
  const pb = sf.run('k', fn, b.signal, 'x');
  a.abort();
  await assert.rejects(pa);
  assert.equal(runSignal?.aborted, false, 'one waiter left');
  b.abort();
  await assert.rejects(pb);
  assert.equal(runSignal.aborted, true);
  const pc = sf.run('k', () => Promise.resolve('fresh'), never, 'x');
  assert.equal(await pc, 'fresh');
  assert.equal(calls, 1);
});

test('the run has its own timeout → UNAVAILABLE for every caller (not the client deadline)', async () => {
  const sf = new SingleFlight<string>(30);
  let runReason: AgentError | undefined;
  const fn = (s: AbortSignal): Promise<string> =>
    new Promise((_resolve, reject) => {
      s.addEventListener('abort', () => {
        runReason = s.reason as AgentError;
        reject(runReason);
      });
    });
  const keepAlive = setInterval(() => undefined, 1000);
  const results = await Promise.allSettled([sf.run('k', fn, never, 'pull x'), sf.run('k', fn, never, 'pull x')]);
  clearInterval(keepAlive);
  for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof AgentError && r.reason.code === 'UNAVAILABLE');
  assert.equal(runReason?.message, 'pull x: did not finish within 30 ms');
});

test('errors reach every caller', async () => {
  const sf = new SingleFlight<string>(10_000);
  const err = new AgentError('NOT_FOUND', 'image x not found in r');
  const results = await Promise.allSettled([1, 2, 3].map(() => sf.run('k', () => Promise.reject(err), never, 'x')));
  for (const r of results) assert.ok(r.status === 'rejected' && r.reason === err);
});

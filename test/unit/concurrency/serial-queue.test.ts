/** The per-worker FIFO lock behind InvokeWorker's one-at-a-time rule. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SerialQueue } from '../../../src/concurrency/serial-queue.js';

test('SerialQueue serves waiters one at a time in arrival order', async () => {
  const q = new SerialQueue();
  const signal = new AbortController().signal;
  const order: number[] = [];
  await q.acquire(signal);
  const waits = [1, 2, 3].map((n) =>
    q.acquire(signal).then(() => {
      order.push(n);
    }),
  );
  assert.equal(q.waiting, 3);
  for (let i = 0; i < 3; i++) {
    q.release();
    await waits[i];
  }
  assert.deepEqual(order, [1, 2, 3]);
  assert.ok(q.busy);
  q.release();
  assert.ok(!q.busy);
});

test('SerialQueue: an aborted waiter leaves the queue with the signal reason and is skipped', async () => {
  const q = new SerialQueue();
  const free = new AbortController().signal;
  await q.acquire(free);
  const ac = new AbortController();
  const gone = q.acquire(ac.signal);
  const next = q.acquire(free);
  const reason = new Error('deadline');
  ac.abort(reason);
  await assert.rejects(gone, (e) => e === reason);
  assert.equal(q.waiting, 1);
  q.release();
  await next;
  assert.ok(q.busy);
  q.release();
  assert.ok(!q.busy);
  // Already aborted: rejects at once without queueing.
  await assert.rejects(q.acquire(ac.signal), (e) => e === reason);
  assert.equal(q.waiting, 0);
});

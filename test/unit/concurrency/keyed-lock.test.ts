import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedLock } from '../../../src/concurrency/keyed-lock.js';
import { AgentError } from '../../../src/errors.js';

const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('KeyedLock: one key runs one call at a time in order, even after a failure; other keys run alongside', async () => {
  const lock = new KeyedLock('worker');
  const log: string[] = [];
  const job =
    (name: string, fail = false) =>
    async (): Promise<string> => {
      log.push(`${name} start`);
      await tick();
      log.push(`${name} end`);
      if (fail) throw new Error(name);
      return name;
    };
  const a1 = lock.run('a', undefined, job('a1', true));
  const a2 = lock.run('a', undefined, job('a2'));
  const b1 = lock.run('b', undefined, job('b1'));
  assert.equal(lock.has('a'), true);
  await assert.rejects(a1, /a1/);
  assert.equal(await a2, 'a2');
  assert.equal(await b1, 'b1');
  assert.ok(log.indexOf('a1 end') < log.indexOf('a2 start'), log.join(', '));
  assert.ok(log.indexOf('b1 start') < log.indexOf('a1 end'), 'b does not wait for a');
  assert.equal(lock.has('a'), false, 'no entry is kept once the queue is empty');
  assert.equal(lock.has('b'), false);
});

test('KeyedLock: a waiter whose signal fires gives up with CANCELLED naming the key; the queue goes on', async () => {
  const lock = new KeyedLock('CNI');
  let release!: () => void;
  const first = lock.run('w1', undefined, () => new Promise<void>((r) => (release = r)));
  const ac = new AbortController();
  let ran = false;
  const waiting = lock.run('w1', ac.signal, () => {
    ran = true;
    return Promise.resolve();
  });
  ac.abort();
  await assert.rejects(waiting, (err: unknown) => err instanceof AgentError && err.code === 'CANCELLED' && err.message.includes('CNI w1'));
  const third = lock.run('w1', undefined, () => Promise.resolve('third'));
  release();
  await first;
  assert.equal(await third, 'third');
  assert.equal(ran, false);
});

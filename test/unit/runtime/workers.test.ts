import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkerTable } from '../../../src/runtime/workers.js';
import { UndoStack } from '../../../src/runtime/undo.js';
import { silentLogger } from '../../../src/log.js';

const w = (id: string, status: 'RUNNING' | 'PAUSED' | 'STOPPED' = 'RUNNING') => ({
  id,
  name: id,
  functionName: 'f',
  ownerId: 'o',
  status,
  createdAt: 100,
  lastUsedAt: 100,
  ipAddress: '10.0.0.2',
  port: 8080,
  exitCode: 0,
  exitTime: 0,
  oomKills: 0,
  memoryMb: 128,
});

test('WorkerTable keeps workers, counts by status and only moves lastUsedAt forward', () => {
  let changes = 0;
  const t = new WorkerTable(() => changes++);
  t.put(w('a'));
  t.put(w('b', 'PAUSED'));
  t.setStatus('a', 'STOPPED');
  assert.deepEqual(t.countByStatus(), { RUNNING: 0, PAUSED: 1, STOPPED: 1, UNKNOWN: 0 });
  t.touch('a', 200);
  t.touch('a', 150);
  assert.equal(t.get('a')?.lastUsedAt, 200);
  assert.equal(t.update('nope', { status: 'RUNNING' }), undefined);
  assert.ok(t.delete('a'));
  assert.ok(!t.delete('a'));
  assert.equal(t.size, 1);
  assert.ok(changes >= 4);
});

test('UndoStack runs steps in reverse, continues past failures, and drops removed steps', async () => {
  const order: string[] = [];
  const u = new UndoStack();
  u.push('one', () => {
    order.push('one');
    return Promise.resolve();
  });
  const drop = u.push('two', () => {
    order.push('two');
    return Promise.resolve();
  });
  u.push('three', () => Promise.reject(new Error('boom')));
  u.push('four', () => {
    order.push('four');
    return Promise.resolve();
  });
  drop();
  const failed = await u.run(silentLogger(), 1000);
  assert.deepEqual(order, ['four', 'one']);
  assert.deepEqual(failed, ['three']);
});

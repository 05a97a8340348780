import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Admission } from '../../../src/runtime/admission.js';
import { defaultMaxTotalMemoryMb } from '../../../src/config/config.js';
import type { WorkerStatus } from '../../../src/runtime/runtime.js';

interface W {
  status: WorkerStatus;
  memoryMb: number;
}

test('reservations count until released; the table counts workers, stopped ones hold no memory', () => {
  const table: W[] = [];
  const refused: string[] = [];
  const a = new Admission(
    { maxWorkers: 3, maxTotalMemoryMb: 512 },
    () => table,
    (l) => refused.push(l),
  );
  const r1 = a.reserve(256);
  const r2 = a.reserve(128);
  assert.deepEqual(a.usage(), { workers: 2, memoryMb: 384 });
  assert.throws(
    () => a.reserve(256),
    (e: Error & { code?: string }) =>
      e.code === 'RESOURCE_EXHAUSTED' && e.message.includes('AGENT_MAX_TOTAL_MEMORY_MB=512') && e.message.includes('640 MiB'),
  );
  assert.deepEqual(refused, ['memory']);
  // r1's worker enters the table: the reservation hands over, nothing is counted twice.
  table.push({ status: 'UNKNOWN', memoryMb: 256 });
  r1.release();
  r1.release(); // idempotent
  assert.deepEqual(a.usage(), { workers: 2, memoryMb: 384 });
  const r3 = a.reserve(128);
  assert.throws(
    () => a.reserve(16),
    (e: Error & { code?: string }) => e.code === 'RESOURCE_EXHAUSTED' && e.message.includes('AGENT_MAX_WORKERS=3'),
  );
  assert.deepEqual(refused, ['memory', 'workers']);
  r2.release();
  r3.release();
  // A stopped worker still counts as a worker, not as memory.
  table[0] = { status: 'STOPPED', memoryMb: 256 };
  assert.deepEqual(a.usage(), { workers: 1, memoryMb: 0 });
  a.reserve(512).release();
});

test('0 means no limit', () => {
  const a = new Admission({ maxWorkers: 0, maxTotalMemoryMb: 0 }, () => []);
  for (let i = 0; i < 100; i++) a.reserve(262_144);
  assert.deepEqual(a.usage(), { workers: 100, memoryMb: 100 * 262_144 });
});

test('default memory bound: host less max(1 GiB, 10 %)', () => {
  const GIB = 1024 ** 3;
  assert.equal(defaultMaxTotalMemoryMb(4 * GIB), 3072);
  assert.equal(defaultMaxTotalMemoryMb(24 * GIB), 24576 - 2457);
  assert.equal(defaultMaxTotalMemoryMb(512 * 1024 * 1024), 16, 'never below the smallest worker');
});

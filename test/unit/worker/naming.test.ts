import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ID_PATTERN, LABELS, MAX_ID_LENGTH, isManaged, managedFilter, workerId, workerLabels } from '../../../src/worker/naming.js';

test('workerId is {brand}-{env}-{safe(fn)}-{8 hex}', () => {
  assert.equal(workerId('esb', 'default', 'Hello World', 'deadbeef'), 'esb-default-hello-world-deadbeef');
  assert.match(workerId('esb', 'prod', 'fn'), /^esb-prod-fn-[0-9a-f]{8}$/);
});

test('workerId sanitises odd function names into containerd-valid ids', () => {
  for (const fn of ['../../etc/passwd', 'ÄÖÜ', '   ', '__x__', 'a..b--c__d', 'x'.repeat(500), '日本語-関数', 'fn\u0000nul', '-.-']) {
    const id = workerId('esb', 'default', fn, 'abcdef01');
    assert.ok(id.length <= MAX_ID_LENGTH, `${id} too long`);
    assert.match(id, ID_PATTERN, `${JSON.stringify(fn)} → ${id}`);
    assert.ok(id.endsWith('-abcdef01'));
  }
});

test('workerId truncates long names to exactly the limit', () => {
  const id = workerId('esb', 'default', 'f'.repeat(200), '01234567');
  assert.equal(id.length, MAX_ID_LENGTH);
});

test('workerLabels carry the contract labels and isManaged recognises them', () => {
  const labels = workerLabels({
    functionName: 'My Fn',
    env: 'e1',
    ownerId: 'gw',
    createdAt: 1700000000,
    ip: '10.0.0.2',
    netns: '/run/netns/x',
    cniNetwork: 'esb-net',
    memoryMb: 128,
    image: 'r/i:t',
  });
  assert.equal(labels[LABELS.function], 'My Fn');
  assert.equal(labels['created_by'], 'esb-agent');
  assert.equal(labels['esb_env'], 'e1');
  assert.equal(labels['com.esb.kind'], 'function');
  assert.equal(labels['com.esb.owner'], 'gw');
  assert.equal(labels[LABELS.createdAt], '1700000000');
  assert.ok(isManaged(labels, 'e1'));
  assert.ok(!isManaged(labels, 'e2'));
  assert.ok(!isManaged({ ...labels, created_by: 'someone' }, 'e1'));
  assert.equal(managedFilter('e1'), 'labels."created_by"=="esb-agent",labels."esb_env"=="e1",labels."com.esb.kind"=="function"');
});

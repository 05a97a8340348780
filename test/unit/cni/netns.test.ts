import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { checkNetnsName, isNetnsHandle, NETNS_RUN_DIR, netnsPath } from '../../../src/cni/netns.js';

test('netns names: worker ids (up to 76 chars) pass; path-like or odd names → INVALID_ARGUMENT', () => {
  const id76 = `esb-default-${'a'.repeat(55)}-deadbeef`;
  assert.equal(id76.length, 76);
  assert.equal(netnsPath(id76), `${NETNS_RUN_DIR}/${id76}`);
  for (const ok of ['w1', 'A.b_c-d', 'x'.repeat(254)]) checkNetnsName(ok);
  for (const bad of ['', '.', '..', '../etc', 'a/b', '-x', '.hidden', 'a b', 'x'.repeat(255), 'ä']) {
    assert.throws(
      () => {
        checkNetnsName(bad);
      },
      (err: unknown) => err instanceof AgentError && err.code === 'INVALID_ARGUMENT',
      bad,
    );
  }
});

test('isNetnsHandle: true for a netns file, false for plain files, missing paths and ""', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-netns-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const plain = path.join(dir, 'leftover');
  await fs.writeFile(plain, '');
  assert.equal(await isNetnsHandle('/proc/self/ns/net'), true);
  assert.equal(await isNetnsHandle(plain), false);
  assert.equal(await isNetnsHandle(path.join(dir, 'missing')), false);
  assert.equal(await isNetnsHandle(''), false);
});

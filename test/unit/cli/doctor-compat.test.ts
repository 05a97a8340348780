import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classify, majorMinor } from '../../../src/cli/doctor-compat.js';

test('majorMinor reads distribution version strings', () => {
  assert.deepEqual(majorMinor('1.6.20~ds1'), [1, 6]);
  assert.deepEqual(majorMinor('v2.1.9'), [2, 1]);
  assert.deepEqual(majorMinor('1.1.5+ds1'), [1, 1]);
  assert.equal(majorMinor('dev'), undefined);
  assert.equal(majorMinor(undefined), undefined);
});

test('the compatibility matrix: tested, audited only, untested, unsupported', () => {
  const c = (cgroupVersion: 1 | 2, containerd: string | undefined, runc: string | undefined): string =>
    classify({ cgroupVersion, containerd, runc }).status;
  // Tested in CI: the host and the two guest configurations.
  assert.equal(c(1, '1.6.20~ds1', '1.1.5+ds1'), 'tested');
  assert.equal(c(2, '1.7.24~ds1', '1.1.15+ds1'), 'tested');
  assert.equal(c(2, 'v2.1.9', '1.1.15'), 'tested');
  // Audited only.
  assert.equal(c(2, 'v2.0.5', '1.1.15'), 'audited');
  assert.equal(c(2, '1.7.27', '1.3.6'), 'audited');
  assert.equal(c(1, '1.7.24', '1.1.5'), 'audited', 'v1 with 1.7 was not run');
  // Outside.
  assert.equal(c(2, 'v2.2.0', '1.1.15'), 'untested');
  assert.equal(c(2, '1.7.24', undefined), 'untested');
  assert.equal(c(1, undefined, '1.1.5'), 'untested');
  assert.equal(c(1, '1.5.18', '1.1.5'), 'unsupported');
  assert.match(classify({ cgroupVersion: 1, containerd: '1.5.18', runc: '1.1.5' }).why, /older than 1\.6/);
});

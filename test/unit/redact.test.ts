/** Host paths leave gRPC messages and plugin output; the caller's own image paths stay (src/redact.ts). */
import assert from 'node:assert/strict';
import test from 'node:test';
import { redactHost, redactHostPaths } from '../../src/redact.js';

test('host paths are replaced, request paths and paths inside the image are kept', () => {
  assert.equal(redactHostPaths('open /var/lib/esb-agent/workers/x/hosts: EACCES'), 'open <host path>: EACCES');
  assert.equal(
    redactHostPaths('failed at /etc/cni/net.d/10-esb.conflist, see /home/alice/.docker/config.json'),
    'failed at <host path>, see <host path>',
  );
  assert.equal(redactHostPaths('invoke path /2015-03-31/functions/f/invocations'), 'invoke path /2015-03-31/functions/f/invocations');
  assert.equal(redactHostPaths('USER "app": the image\'s /etc/passwd is a FIFO'), 'USER "app": the image\'s /etc/passwd is a FIFO');
  // Only the path right after "image's " is spared.
  assert.equal(redactHostPaths("the image's /etc/group and /etc/shadow"), "the image's /etc/group and <host path>");
});

test('redactHost folds control characters and whitespace and caps the length', () => {
  assert.equal(redactHost('  a\u0000b\n\n c /tmp/x  '), 'a b c <host path>');
  const long = redactHost('x'.repeat(50), 10);
  assert.equal(long, `${'x'.repeat(10)}…`);
});

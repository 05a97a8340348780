/**
 * Engine API failures → AgentError codes (src/runtime/docker/errors.ts), with messages recorded
 * from a real dockerd 20.10 and docker-registry 2.8.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDockerHost } from '../../../src/runtime/docker/engine-client.js';
import {
  engineError,
  engineErrorCode,
  engineMessage,
  isUnreachable,
  pullError,
  pullErrorCode,
} from '../../../src/runtime/docker/errors.js';

test('pull errors: unknown image → NOT_FOUND, credentials refused → PERMISSION_DENIED, registry down → UNAVAILABLE', () => {
  assert.equal(
    pullErrorCode(404, 'manifest for 127.0.0.1:34797/esb-test/nope:v1 not found: manifest unknown: manifest unknown'),
    'NOT_FOUND',
  );
  assert.equal(
    pullErrorCode(500, 'Head "http://127.0.0.1:38319/v2/esb-test/busybox/manifests/v1": no basic auth credentials'),
    'PERMISSION_DENIED',
  );
  assert.equal(pullErrorCode(500, 'unauthorized: authentication required'), 'PERMISSION_DENIED');
  assert.equal(
    pullErrorCode(
      404,
      "pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
    ),
    'NOT_FOUND',
  );
  assert.equal(pullErrorCode(500, 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'), 'UNAVAILABLE');
  assert.equal(pullErrorCode(500, 'toomanyrequests: You have reached your pull rate limit'), 'UNAVAILABLE');
  // A progress-stream error line has no status of its own.
  assert.equal(pullErrorCode(0, 'manifest unknown: manifest unknown'), 'NOT_FOUND');
  assert.equal(pullErrorCode(0, 'failed to register layer: something odd'), 'INTERNAL');
  assert.equal(pullErrorCode(400, 'invalid reference format'), 'INVALID_ARGUMENT');
});

test('Engine API statuses: 404 NOT_FOUND, 409 name clash ALREADY_EXISTS vs state FAILED_PRECONDITION, 5xx', () => {
  assert.equal(engineErrorCode(404, 'No such container: x'), 'NOT_FOUND');
  assert.equal(
    engineErrorCode(
      409,
      'Conflict. The container name "/esb-x" is already in use by container "f0f6". You have to remove (or rename) that container to be able to reuse that name.',
    ),
    'ALREADY_EXISTS',
  );
  assert.equal(engineErrorCode(409, 'removal of container esb-x is already in progress'), 'FAILED_PRECONDITION');
  assert.equal(
    engineErrorCode(400, 'OCI runtime create failed: exec: "/no/such/binary": stat /no/such/binary: no such file or directory'),
    'INVALID_ARGUMENT',
  );
  assert.equal(engineErrorCode(503, 'daemon is shutting down'), 'UNAVAILABLE');
  assert.equal(engineErrorCode(500, 'something broke'), 'INTERNAL');
  const e = engineError('start container esb-x', 404, '{"message":"No such container: esb-x"}');
  assert.equal(e.code, 'NOT_FOUND');
  assert.equal(e.message, 'start container esb-x: dockerd answered 404: No such container: esb-x');
});

test('error bodies: the JSON message, or the text itself', () => {
  assert.equal(engineMessage('{"message":"page not found"}'), 'page not found');
  assert.equal(engineMessage('plain text\n'), 'plain text');
});

test('unreachable dockerd: connection refused, a missing socket, a hang-up — also as a nested cause', () => {
  assert.ok(isUnreachable(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })));
  assert.ok(isUnreachable(Object.assign(new Error('connect ENOENT /run/x.sock'), { code: 'ENOENT' })));
  assert.ok(isUnreachable(new Error('fetch failed', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) })));
  assert.ok(!isUnreachable(new Error('bad json')));
  assert.ok(!isUnreachable(undefined));
});

test('DOCKER_HOST: a unix socket path or tcp://host:port; anything else is refused', () => {
  assert.deepEqual(parseDockerHost('unix:///var/run/docker.sock'), { origin: 'http://docker', socketPath: '/var/run/docker.sock' });
  assert.deepEqual(parseDockerHost('tcp://10.0.0.5:2375'), { origin: 'http://10.0.0.5:2375' });
  assert.throws(() => parseDockerHost('unix://relative.sock'), /absolute/);
  assert.throws(() => parseDockerHost('ssh://host'), /unix:\/\/\/path or tcp/);
});

test("pullError: class, HTTP status and distribution codes only, never dockerd's text (it may quote the registry)", () => {
  const secret = 'INTERNAL-ADMIN-PAGE token=abc123';
  const cases: [number, string, string, RegExp][] = [
    [
      500,
      `error parsing HTTP 500 response body: invalid character 'I' looking for beginning of value: "${secret}"`,
      'UNAVAILABLE',
      /HTTP 500/,
    ],
    [404, 'manifest for 127.0.0.1:1/x:v1 not found: manifest unknown: manifest unknown', 'NOT_FOUND', /MANIFEST_UNKNOWN/],
    [500, `unauthorized: ${secret}`, 'PERMISSION_DENIED', /UNAUTHORIZED/],
    [0, `toomanyrequests: ${secret}`, 'UNAVAILABLE', /TOOMANYREQUESTS/],
    [0, `received unexpected HTTP status: 502 Bad Gateway ${secret}`, 'UNAVAILABLE', /HTTP 502/],
  ];
  for (const [status, message, code, re] of cases) {
    const e = pullError('pull x', status, message);
    assert.equal(e.code, code, message);
    assert.match(e.message, re);
    assert.ok(!e.message.includes('abc123') && !e.message.includes('ADMIN'), e.message);
    assert.match(e.message, /^pull x: /);
  }
});

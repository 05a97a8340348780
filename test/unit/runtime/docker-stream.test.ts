/**
 * dockerd's JSON-lines streams (src/runtime/docker/json-stream.ts) and its event messages
 * (events.ts). The lines are as a real dockerd 20.10 sent them.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { decodeDockerEvent } from '../../../src/runtime/docker/events.js';
import { jsonLines, progressError, progressStatus } from '../../../src/runtime/docker/json-stream.js';

async function collect(chunks: (string | Buffer)[]): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const m of jsonLines(Readable.from(chunks, { objectMode: true }) as AsyncIterable<string | Buffer>)) out.push(m);
  return out;
}

test('JSON lines split across chunks, CRLF, blank lines, a multi-byte character cut in two, and a last line without newline', async () => {
  const euro = Buffer.from('{"status":"€"}\n');
  const msgs = await collect([
    '{"status":"Pulling from esb-test/worker","id":"v1"}\r\n{"stat',
    'us":"Pulling fs layer","id":"85248fd5299d"}\n\n',
    euro.subarray(0, 12),
    euro.subarray(12),
    '{"status":"Digest: sha256:55b5"}',
  ]);
  assert.deepEqual(msgs.map(progressStatus), ['Pulling from esb-test/worker', 'Pulling fs layer', '€', 'Digest: sha256:55b5']);
});

test('a line that is not JSON is kept as raw text, not dropped', async () => {
  assert.deepEqual(await collect(['oops\n']), [{ raw: 'oops' }]);
});

test('progress error lines: errorDetail.message first, then error; progress lines are no errors', () => {
  assert.equal(
    progressError({ errorDetail: { message: 'manifest unknown: manifest unknown' }, error: 'manifest unknown' }),
    'manifest unknown: manifest unknown',
  );
  assert.equal(progressError({ error: 'unauthorized: authentication required' }), 'unauthorized: authentication required');
  assert.equal(progressError({ status: 'Downloading', progressDetail: { current: 36445, total: 1109302 }, id: '85248fd5299d' }), undefined);
  assert.equal(progressError({ errorDetail: null, error: '' }), undefined);
  assert.equal(progressError('text'), undefined);
});

test('events: die carries the exit code and time, oom/start/destroy the name; other types and actions are ignored', () => {
  const die = {
    status: 'die',
    id: '74e332f0e38b',
    from: '127.0.0.1:34797/esb-test/worker:v1',
    Type: 'container',
    Action: 'die',
    Actor: { ID: '74e332f0e38b', Attributes: { exitCode: '137', name: 'esb-exp-fn-12345678' } },
    scope: 'local',
    time: 1795604195,
  };
  assert.deepEqual(decodeDockerEvent(die), { kind: 'die', name: 'esb-exp-fn-12345678', exitCode: 137, time: 1795604195 });
  const oom = { ...die, status: 'oom', Action: 'oom', Actor: { ID: '74e332f0e38b', Attributes: { name: 'esb-exp-fn-12345678' } } };
  assert.deepEqual(decodeDockerEvent(oom), { kind: 'oom', name: 'esb-exp-fn-12345678' });
  assert.deepEqual(decodeDockerEvent({ ...oom, Action: 'destroy' }), { kind: 'destroy', name: 'esb-exp-fn-12345678' });
  assert.equal(decodeDockerEvent({ ...oom, Action: 'exec_start: sh' }), undefined);
  assert.equal(decodeDockerEvent({ ...oom, Type: 'network' }), undefined);
  assert.equal(decodeDockerEvent({ ...oom, Actor: { Attributes: {} } }), undefined);
});

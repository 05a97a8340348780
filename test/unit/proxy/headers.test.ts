/** Path checks and hop-by-hop filtering for InvokeWorker (docs/contract.md#invokeworker, docs/contract.md#gateway). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { checkPath, requestHeaders, responseHeaders } from '../../../src/proxy/headers.js';

test('checkPath accepts origin-form paths only → INVALID_ARGUMENT otherwise', () => {
  for (const ok of ['/', '/2015-03-31/functions/function/invocations', '/a?b=c&d=%20', '/a/b;c']) {
    assert.doesNotThrow(() => {
      checkPath(ok);
    }, ok);
  }
  for (const bad of ['', 'a', 'http://x/', '//x/y', '/a b', '/a\r\nHost: x', '/a#frag', '/é', '/\t']) {
    assert.throws(
      () => {
        checkPath(bad);
      },
      (e: unknown) => e instanceof AgentError && e.code === 'INVALID_ARGUMENT',
      JSON.stringify(bad),
    );
  }
});

test('requestHeaders drops hop-by-hop, Connection-listed, Host, Content-Length and Expect; keeps the rest as given', () => {
  const out = requestHeaders({
    'Content-Type': 'application/json',
    'X-Amzn-Trace-Id': 'Root=1',
    connection: 'close, X-Hop-A',
    CONNECTION: 'x-hop-b',
    'x-hop-a': '1',
    'X-HOP-B': '2',
    'Keep-Alive': 'timeout=1',
    'Proxy-Authenticate': 'x',
    'Proxy-Authorization': 'x',
    'Proxy-Connection': 'x',
    Te: 'trailers',
    Trailer: 'x',
    'Transfer-Encoding': 'chunked',
    Upgrade: 'websocket',
    Host: 'elsewhere',
    'content-length': '5',
    Expect: '100-continue',
    'X-Empty': '',
  });
  assert.deepEqual(out, { 'Content-Type': 'application/json', 'X-Amzn-Trace-Id': 'Root=1', 'X-Empty': '' });
});

test('requestHeaders keeps a __proto__ header as an own key', () => {
  const out = requestHeaders(JSON.parse('{"__proto__":"v"}') as Record<string, string>);
  assert.ok(Object.hasOwn(out, '__proto__'));
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
});

test('requestHeaders refuses names that are not tokens and values with CR/LF/NUL → INVALID_ARGUMENT', () => {
  const cases: Record<string, string>[] = [
    { '': 'v' },
    { 'a b': 'v' },
    { 'a:b': 'v' },
    { 'x-a': 'v\r\nx: y' },
    { 'x-a': 'v\nx' },
    { 'x-a': 'v\0' },
    { 'x-a': '日本' },
  ];
  for (const h of cases) {
    assert.throws(
      () => requestHeaders(h),
      (e: unknown) => e instanceof AgentError && e.code === 'INVALID_ARGUMENT',
      JSON.stringify(h),
    );
  }
  // Latin-1 and tabs are valid header bytes.
  assert.deepEqual(requestHeaders({ 'x-a': 'caf\u00e9\tok' }), { 'x-a': 'caf\u00e9\tok' });
});

test('responseHeaders drops hop-by-hop and Connection-listed names and joins repeated values with ", "', () => {
  const out = responseHeaders({
    connection: ['keep-alive, X-Resp-Hop', 'x-other'],
    'x-resp-hop': '1',
    'x-other': '2',
    'keep-alive': 'timeout=5',
    'transfer-encoding': 'chunked',
    trailer: 'x-sum',
    upgrade: 'h2c',
    'proxy-authenticate': 'Basic',
    'set-cookie': ['a=1', 'b=2; Path=/'],
    'x-multi': ['1', '2', '3'],
    'content-type': 'application/json',
    'content-length': '12',
    'x-amz-function-error': 'Unhandled',
    'x-undefined': undefined,
  });
  assert.deepEqual(out, {
    'set-cookie': 'a=1, b=2; Path=/',
    'x-multi': '1, 2, 3',
    'content-type': 'application/json',
    'content-length': '12',
    'x-amz-function-error': 'Unhandled',
  });
});

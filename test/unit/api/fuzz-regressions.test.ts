/**
 * Regressions found by the InvokeWorker fuzz (test/integration/fuzz.test.ts): a path with a
 * non-ASCII character, or a header value with a control character other than CR/LF/NUL or a
 * character above U+00FF, passed validation and was refused only later by the proxy. So the
 * same malformed request answered NOT_FOUND or PERMISSION_DENIED for a container that was not
 * the caller's, and INVALID_ARGUMENT only for one that was. Malformed fields are now refused
 * first, whatever the container (docs/contract.md#rules).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { createAgentService } from '../../../src/api/service.js';
import type { RpcContext } from '../../../src/api/status.js';
import { validateInvokeHeaders, validateInvokePath } from '../../../src/api/validate.js';
import { FakeRuntime } from '../../helpers/fake-runtime.js';

function ctx(): RpcContext {
  return { signal: new AbortController().signal, annotate: () => undefined };
}

function isInvalid(message: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AgentError, `expected AgentError, got ${String(err)}`);
    assert.equal(err.code, 'INVALID_ARGUMENT', err.message);
    assert.match(err.message, message);
    return true;
  };
}

describe('InvokeWorker: malformed path and header values are refused by validation', () => {
  for (const path of ['/é', '/fn/\u{1F600}', 'caf\u00e9', '/\ud800']) {
    test(`path ${JSON.stringify(path)} → INVALID_ARGUMENT`, () => {
      assert.throws(() => validateInvokePath(path), isInvalid(/non-ASCII/));
    });
  }
  test('percent-encoded non-ASCII is still accepted', () => {
    assert.equal(validateInvokePath('/caf%C3%A9'), '/caf%C3%A9');
  });

  for (const value of ['a\u0001b', 'a\u001fb', 'a\u007fb', 'ƒ', '\u{1F600}']) {
    test(`header value ${JSON.stringify(value)} → INVALID_ARGUMENT`, () => {
      assert.throws(() => validateInvokeHeaders({ 'X-A': value }), isInvalid(/control character or a character above U\+00FF/));
    });
  }
  test('tab, printable ASCII and Latin-1 values are still accepted', () => {
    const headers = { 'X-A': 'a\tb ~', 'X-B': 'caf\u00e9 \u00ff' };
    assert.deepEqual(validateInvokeHeaders(headers), headers);
  });

  test('an unknown container with a malformed path or header → INVALID_ARGUMENT, not NOT_FOUND', async () => {
    const svc = createAgentService({
      runtime: new FakeRuntime(),
      invokeDefaultTimeoutMs: 1000,
      invoker: { invoke: () => Promise.reject(new Error('must not be called')) },
    });
    const base = {
      container_id: 'esb-default-nope-00000000',
      owner_id: 'gw',
      path: '',
      payload: Buffer.alloc(0),
      headers: {},
      timeout_ms: 0,
    };
    await assert.rejects(svc.invokeWorker({ ...base, path: '/é' }, ctx()), isInvalid(/non-ASCII/));
    await assert.rejects(svc.invokeWorker({ ...base, headers: { 'X-A': '\u0001' } }, ctx()), isInvalid(/control character/));
  });
});

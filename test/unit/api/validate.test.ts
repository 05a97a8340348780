import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import {
  DEFAULT_INVOKE_PATH,
  LIMITS,
  invokeTimeoutMs,
  validateContainerRef,
  validateEnsure,
  validateEnv,
  validateFunctionName,
  validateImage,
  validateInvoke,
  validateInvokeHeaders,
  validateInvokePath,
  validateOwner,
} from '../../../src/api/validate.js';

/** Asserts `fn` throws INVALID_ARGUMENT whose message matches `message`. */
function rejects(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AgentError, `expected AgentError, got ${String(err)}`);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, message);
    return true;
  });
}

const ensureReq = (over: Partial<{ function_name: string; image: string; env: Record<string, string>; owner_id: string }> = {}) => ({
  function_name: 'hello',
  image: '',
  env: {},
  owner_id: 'gw-1',
  ...over,
});

const invokeReq = (
  over: Partial<{
    container_id: string;
    owner_id: string;
    path: string;
    payload: Buffer;
    headers: Record<string, string>;
    timeout_ms: number;
  }> = {},
) => ({
  container_id: 'esb-default-hello-0a1b2c3d',
  owner_id: 'gw-1',
  path: '',
  payload: Buffer.alloc(0),
  headers: {},
  timeout_ms: 0,
  ...over,
});

describe('owner_id', () => {
  for (const blank of ['', ' ', '\t\n ']) {
    test(`blank ${JSON.stringify(blank)} → INVALID_ARGUMENT "owner_id is required"`, () => {
      rejects(() => validateOwner(blank), /^owner_id is required/);
    });
  }
  test('is trimmed', () => {
    assert.equal(validateOwner('  gw-1 \n'), 'gw-1');
  });
  test('over the limit → INVALID_ARGUMENT naming the limit', () => {
    assert.equal(validateOwner('o'.repeat(LIMITS.ownerIdChars)), 'o'.repeat(LIMITS.ownerIdChars));
    rejects(() => validateOwner('o'.repeat(LIMITS.ownerIdChars + 1)), /owner_id is 257 characters long; the limit is 256/);
  });
  test('control characters → INVALID_ARGUMENT', () => {
    rejects(() => validateOwner('gw\u00001'), /owner_id contains a control character \(U\+0000\)/);
    rejects(() => validateOwner('gw\u009b1'), /U\+009B/);
  });
  test('every RPC checks the owner first', () => {
    rejects(() => validateContainerRef({ container_id: '', owner_id: '' }), /^owner_id is required/);
    rejects(() => validateEnsure(ensureReq({ owner_id: ' ', function_name: '' })), /^owner_id is required/);
    rejects(() => validateInvoke(invokeReq({ owner_id: '' }), { defaultTimeoutMs: 30_000 }), /^owner_id is required/);
  });
});

describe('container_id', () => {
  test('blank → INVALID_ARGUMENT', () => {
    rejects(() => validateContainerRef({ container_id: '  ', owner_id: 'gw' }), /^container_id is required/);
  });
  test('trimmed and returned with the owner', () => {
    assert.deepEqual(validateContainerRef({ container_id: ' abc ', owner_id: ' gw ' }), { containerId: 'abc', ownerId: 'gw' });
  });
  test('over-long or with control characters → INVALID_ARGUMENT', () => {
    rejects(
      () => validateContainerRef({ container_id: 'x'.repeat(LIMITS.containerIdChars + 1), owner_id: 'gw' }),
      /container_id is \d+ characters long/,
    );
    rejects(() => validateContainerRef({ container_id: 'a\nb', owner_id: 'gw' }), /container_id contains a control character/);
  });
});

describe('function_name', () => {
  const cases: [string, string, RegExp | null][] = [
    ['plain', 'hello-world', null],
    ['128 characters', 'f'.repeat(128), null],
    ['128 code points of astral characters', '😀'.repeat(128), null],
    ['non-ASCII letters', '関数', null],
    ['empty', '', /^function_name is required/],
    ['spaces only', '   ', /^function_name is required/],
    ['129 characters', 'f'.repeat(129), /function_name is 129 characters long; the limit is 128/],
    ['129 astral code points', '😀'.repeat(129), /function_name is 129 characters long/],
    ['NUL', 'a\u0000b', /function_name contains a control character \(U\+0000\)/],
    ['newline', 'a\nb', /control character \(U\+000A\)/],
    ['DEL', 'a\u007fb', /U\+007F/],
  ];
  for (const [name, value, error] of cases) {
    test(`${name} → ${error ? 'INVALID_ARGUMENT' : 'accepted as sent'}`, () => {
      if (error) rejects(() => validateFunctionName(value), error);
      else assert.equal(validateFunctionName(value), value);
    });
  }
  test('kept exactly as sent (not trimmed): it round-trips through the label', () => {
    assert.equal(validateEnsure(ensureReq({ function_name: ' hello ' })).functionName, ' hello ');
  });
});

describe('image', () => {
  test('blank → "" (the runtime resolves the default)', () => {
    assert.equal(validateImage('  '), '');
  });
  test('trimmed', () => {
    assert.equal(validateImage(' registry:5010/hello:latest '), 'registry:5010/hello:latest');
  });
  test('512 characters pass, 513 do not', () => {
    assert.equal(validateImage('a'.repeat(512)), 'a'.repeat(512));
    rejects(() => validateImage('a'.repeat(513)), /image is 513 characters long; the limit is 512/);
  });
  test('inner whitespace or control characters → INVALID_ARGUMENT', () => {
    rejects(() => validateImage('registry/hello world:1'), /contains whitespace or control characters/);
    rejects(() => validateImage('registry/hello\u0000:1'), /contains whitespace or control characters/);
  });
});

describe('env', () => {
  const cases: [string, Record<string, string>, RegExp | null][] = [
    ['empty', {}, null],
    ['ordinary', { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256', A: '' }, null],
    ['value with = and newline', { A: 'x=y\nz' }, null],
    ['key with =', { 'A=B': 'x' }, /env key "A=B" contains '='/],
    ['empty key', { '': 'x' }, /empty key/],
    ['key with NUL', { 'A\u0000': 'x' }, /env key "A\\u0000" contains a control character or NUL/],
    ['key with newline', { 'A\nB': 'x' }, /control character/],
    ['value with NUL', { A: 'x\u0000y' }, /env value of "A" contains a NUL/],
    ['key of 257 characters', { ['K'.repeat(257)]: 'x' }, /env key "K+…" is 257 characters long; the limit is 256/],
  ];
  for (const [name, env, error] of cases) {
    test(`${name} → ${error ? 'INVALID_ARGUMENT' : 'accepted'}`, () => {
      if (error) rejects(() => validateEnv(env), error);
      else assert.deepEqual(validateEnv(env), env);
    });
  }
  test(`more than ${LIMITS.envEntries} entries → INVALID_ARGUMENT`, () => {
    const env = Object.fromEntries(Array.from({ length: LIMITS.envEntries + 1 }, (_, i) => [`K${i}`, 'v']));
    rejects(() => validateEnv(env), /env has 513 entries; the limit is 512/);
    delete env['K0'];
    assert.equal(Object.keys(validateEnv(env)).length, LIMITS.envEntries);
  });
  test('over 256 KiB in all → INVALID_ARGUMENT', () => {
    rejects(() => validateEnv({ A: 'x'.repeat(LIMITS.envTotalBytes) }), /env is \d+ bytes in all; the limit is 262144 bytes/);
    assert.doesNotThrow(() => validateEnv({ A: 'x'.repeat(LIMITS.envTotalBytes - 3) }));
  });
  test('EnsureContainer passes env on and never echoes values in errors', () => {
    const out = validateEnsure(ensureReq({ env: { SECRET: 's3cr3t' } }));
    assert.deepEqual(out, { functionName: 'hello', image: '', env: { SECRET: 's3cr3t' }, ownerId: 'gw-1' });
    assert.throws(
      () => validateEnv({ SECRET: 's3cr3t\u0000' }),
      (err: Error) => !err.message.includes('s3cr3t'),
    );
  });
});

describe('InvokeWorker path', () => {
  const cases: [string, string, string | RegExp][] = [
    ['blank', '', DEFAULT_INVOKE_PATH],
    ['spaces', '  ', DEFAULT_INVOKE_PATH],
    ['the RIE path', DEFAULT_INVOKE_PATH, DEFAULT_INVOKE_PATH],
    ['no leading slash', '2015-03-31/functions/function/invocations', DEFAULT_INVOKE_PATH],
    ['with a query', '/x?a=1&b=..', '/x?a=1&b=..'],
    ['dots inside a segment', '/a..b/c', '/a..b/c'],
    ['percent-encoded space', '/a%20b', '/a%20b'],
    ['2048 characters', `/${'p'.repeat(2047)}`, `/${'p'.repeat(2047)}`],
    ['2049 characters', `/${'p'.repeat(2048)}`, /path is 2049 characters long; the limit is 2048/],
    ['a URL', 'http://169.254.169.254/latest/meta-data', /looks like a URL/],
    ['a URL without slashes', 'http:evil', /looks like a URL/],
    ['protocol-relative', '//evil.example/x', /looks like a URL/],
    ['a .. segment', '/a/../b', /contains a '\.\.' segment/],
    ['a leading .. segment', '../etc/passwd', /contains a '\.\.' segment/],
    ['a trailing .. segment', '/a/..', /contains a '\.\.' segment/],
    ['an encoded .. segment', '/a/%2e%2E/b', /contains a '\.\.' segment/],
    ['an encoded ../ inside a segment', '/a/%2e%2e%2fb', /contains a '\.\.' segment/],
    ['a backslash', '/a\\..\\b', /backslash/],
    ['a space', '/a b', /whitespace/],
    ['CRLF', '/a\r\nHost: evil', /whitespace/],
    ['a fragment', '/a#b', /'#'/],
    ['malformed percent-encoding', '/a/%zz', /malformed percent-encoding/],
  ];
  for (const [name, raw, expected] of cases) {
    test(`${name} → ${typeof expected === 'string' ? expected.slice(0, 40) : 'INVALID_ARGUMENT'}`, () => {
      if (typeof expected === 'string') assert.equal(validateInvokePath(raw), expected);
      else rejects(() => validateInvokePath(raw), expected);
    });
  }
});

describe('InvokeWorker headers', () => {
  const cases: [string, Record<string, string>, RegExp | null][] = [
    ['ordinary', { 'Content-Type': 'application/json', 'X-Amz-Client-Context': 'e30=' }, null],
    ['empty value', { 'X-A': '' }, null],
    ['tab in value', { 'X-A': 'a\tb' }, null],
    ['name with a space', { 'X A': 'v' }, /header name "X A" is not a valid HTTP header name/],
    ['name with a colon', { 'X:A': 'v' }, /not a valid HTTP header name/],
    ['empty name', { '': 'v' }, /not a valid HTTP header name/],
    ['non-ASCII name', { 'X-Ä': 'v' }, /not a valid HTTP header name/],
    ['value with CRLF', { 'X-A': 'v\r\nX-Evil: 1' }, /header "X-A" has a value with CR, LF or NUL/],
    ['value with LF', { 'X-A': 'v\nw' }, /CR, LF or NUL/],
    ['value with NUL', { 'X-A': 'v\u0000' }, /CR, LF or NUL/],
  ];
  for (const [name, headers, error] of cases) {
    test(`${name} → ${error ? 'INVALID_ARGUMENT' : 'accepted'}`, () => {
      if (error) rejects(() => validateInvokeHeaders(headers), error);
      else assert.deepEqual(validateInvokeHeaders(headers), headers);
    });
  }
  test('too many or too large → INVALID_ARGUMENT', () => {
    const many = Object.fromEntries(Array.from({ length: LIMITS.invokeHeaders + 1 }, (_, i) => [`x-h${i}`, 'v']));
    rejects(() => validateInvokeHeaders(many), /headers has 129 entries; the limit is 128/);
    rejects(() => validateInvokeHeaders({ 'x-big': 'v'.repeat(LIMITS.invokeHeaderBytes) }), /headers are \d+ bytes in all/);
  });
});

describe('InvokeWorker timeout and payload', () => {
  const cases: [number, number][] = [
    [0, 30_000],
    [-1, 30_000],
    [-2147483648, 30_000],
    [1, 1],
    [5000, 5000],
    [LIMITS.invokeTimeoutMaxMs, LIMITS.invokeTimeoutMaxMs],
    [LIMITS.invokeTimeoutMaxMs + 1, LIMITS.invokeTimeoutMaxMs],
    [2147483647, LIMITS.invokeTimeoutMaxMs],
  ];
  for (const [raw, expected] of cases) {
    test(`timeout_ms ${raw} → ${expected}`, () => {
      assert.equal(invokeTimeoutMs(raw, 30_000), expected);
    });
  }
  test('payload over the limit → INVALID_ARGUMENT; at the limit → accepted', () => {
    const at = Buffer.alloc(LIMITS.invokePayloadBytes);
    assert.equal(validateInvoke(invokeReq({ payload: at }), { defaultTimeoutMs: 1000 }).payload, at);
    rejects(
      () => validateInvoke(invokeReq({ payload: Buffer.alloc(LIMITS.invokePayloadBytes + 1) }), { defaultTimeoutMs: 1000 }),
      /payload is \d+ bytes; the limit is \d+ bytes/,
    );
  });
  test('a full request becomes the checked input', () => {
    const out = validateInvoke(invokeReq({ path: 'x', headers: { 'X-A': '1' }, timeout_ms: 250, payload: Buffer.from('{}') }), {
      defaultTimeoutMs: 1000,
    });
    assert.deepEqual(out, {
      containerId: 'esb-default-hello-0a1b2c3d',
      ownerId: 'gw-1',
      path: '/x',
      payload: Buffer.from('{}'),
      headers: { 'X-A': '1' },
      timeoutMs: 250,
    });
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { Authorizer, MAX_CACHED_TOKENS, bearerError, parseWwwAuthenticate, pullScope, type TokenHttp } from '../../../src/registry/auth.js';
import { DockerCredentials } from '../../../src/registry/docker-config.js';

test('parseWwwAuthenticate: Bearer with quoted params', () => {
  assert.deepEqual(
    parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
    ),
    [
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:samalba/my-app:pull,push' },
      },
    ],
  );
});

test('parseWwwAuthenticate: Basic, token values, escapes, spacing and several challenges', () => {
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  assert.deepEqual(parseWwwAuthenticate('BASIC Realm=simple'), [{ scheme: 'basic', params: { realm: 'simple' } }]);
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="a\\"b" , error="invalid_token"'), [
    { scheme: 'bearer', params: { realm: 'a"b', error: 'invalid_token' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate('Basic realm="x", Bearer realm="y",service="s"'), [
    { scheme: 'basic', params: { realm: 'x' } },
    { scheme: 'bearer', params: { realm: 'y', service: 's' } },
  ]);
  assert.deepEqual(
    parseWwwAuthenticate(['Basic realm="x"', 'Bearer realm="y"']).map((c) => c.scheme),
    ['basic', 'bearer'],
  );
  assert.deepEqual(parseWwwAuthenticate('Negotiate'), [{ scheme: 'negotiate', params: {} }]);
  assert.deepEqual(parseWwwAuthenticate(''), []);
  assert.deepEqual(parseWwwAuthenticate(undefined), []);
});

interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body?: string | undefined;
}

function fakeHttp(answer: (c: Call) => { status: number; body?: unknown }): { http: TokenHttp; calls: Call[] } {
  const calls: Call[] = [];
  const http: TokenHttp = (url, init) => {
    const call = { url, method: init.method, headers: init.headers, body: init.body };
    calls.push(call);
    const a = answer(call);
    return Promise.resolve({ status: a.status, body: Buffer.from(a.body === undefined ? '' : JSON.stringify(a.body)) });
  };
  return { http, calls };
}

const creds =
  (auths: Record<string, unknown>): (() => Promise<DockerCredentials>) =>
  () =>
    Promise.resolve(DockerCredentials.parse(JSON.stringify({ auths }), '/cfg/config.json'));
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const signal = new AbortController().signal;
const REG = '127.0.0.1:5000';
const SCOPE = pullScope('esb/fn');
const bearer = [{ scheme: 'bearer', params: { realm: 'http://127.0.0.1:9/token', service: 'reg', scope: 'repository:esb/fn:pull' } }];

test('Bearer with credentials: POST password grant first, token cached per registry+scope', async () => {
  const { http, calls } = fakeHttp(() => ({ status: 200, body: { access_token: 'T1', expires_in: 300 } }));
  const a = new Authorizer({ credentials: creds({ [REG]: { auth: b64('alice:pw') } }), http });
  await a.handleChallenge(REG, SCOPE, bearer, signal);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.method, 'POST');
  const form = new URLSearchParams(calls[0]!.body);
  assert.equal(form.get('grant_type'), 'password');
  assert.equal(form.get('username'), 'alice');
  assert.equal(form.get('password'), 'pw');
  assert.equal(form.get('service'), 'reg');
  assert.equal(form.get('client_id'), 'containerd-client');
  assert.equal(form.get('scope'), 'repository:esb/fn:pull');
  assert.equal(a.authorization(REG, SCOPE), 'Bearer T1');
  assert.equal(a.authorization(REG, pullScope('other')), undefined);
});

test('Bearer: POST answered 404/401/400 falls back to GET with Basic', async () => {
  for (const status of [400, 401, 404]) {
    const { http, calls } = fakeHttp((c) => (c.method === 'POST' ? { status } : { status: 200, body: { token: 'T2' } }));
    const a = new Authorizer({ credentials: creds({ [REG]: { username: 'bob', password: 'pw' } }), http });
    await a.handleChallenge(REG, SCOPE, bearer, signal);
    assert.deepEqual(
      calls.map((c) => c.method),
      ['POST', 'GET'],
    );
    const u = new URL(calls[1]!.url);
    assert.equal(u.searchParams.get('service'), 'reg');
    assert.deepEqual(u.searchParams.getAll('scope'), ['repository:esb/fn:pull']);
    assert.equal(calls[1]!.headers['authorization'], `Basic ${b64('bob:pw')}`);
    assert.equal(a.authorization(REG, SCOPE), 'Bearer T2');
  }
});

test('Bearer without credentials: anonymous GET; token expiry honoured', async () => {
  let now = 1_000_000;
  const { http, calls } = fakeHttp(() => ({ status: 200, body: { token: 'ANON', expires_in: 60 } }));
  const a = new Authorizer({ credentials: creds({}), http, now: () => now });
  await a.handleChallenge(REG, SCOPE, bearer, signal);
  assert.deepEqual(
    calls.map((c) => c.method),
    ['GET'],
  );
  assert.equal(calls[0]!.headers['authorization'], undefined);
  assert.equal(a.authorization(REG, SCOPE), 'Bearer ANON');
  now += 60_000;
  assert.equal(a.authorization(REG, SCOPE), undefined, 'expired token is not sent');
});

test('Bearer: token server refusing the credentials → PERMISSION_DENIED naming the variable, never the user or the file path', async () => {
  const { http } = fakeHttp(() => ({ status: 401 }));
  const a = new Authorizer({ credentials: creds({ [REG]: { auth: b64('alice:wrong') } }), http });
  await assert.rejects(
    a.handleChallenge(REG, SCOPE, bearer, signal),
    (e: unknown) =>
      e instanceof AgentError &&
      e.code === 'PERMISSION_DENIED' &&
      e.message.includes('DOCKER_CONFIG') &&
      !e.message.includes('alice') &&
      !e.message.includes('/cfg'),
  );
});

test('the token cache is bounded: the least recently used scope goes first, expired tokens are dropped', async () => {
  let now = 1_000_000;
  const { http } = fakeHttp(() => ({ status: 200, body: { token: 'T', expires_in: 60 } }));
  const a = new Authorizer({ credentials: creds({}), http, now: () => now });
  await a.handleChallenge(REG, pullScope('keep'), bearer, signal);
  for (let i = 0; i < MAX_CACHED_TOKENS; i++) {
    if (i % 100 === 0) assert.equal(a.authorization(REG, pullScope('keep')), 'Bearer T'); // keeps it recent
    await a.handleChallenge(REG, pullScope(`r${i}`), bearer, signal);
  }
  assert.equal(a.authorization(REG, pullScope('r0')), undefined, 'evicted');
  assert.equal(a.authorization(REG, pullScope(`r${MAX_CACHED_TOKENS - 1}`)), 'Bearer T');
  now += 120_000;
  await a.handleChallenge(REG, pullScope('fresh'), bearer, signal);
  assert.equal(a.authorization(REG, pullScope('fresh')), 'Bearer T');
});

test('a 401 challenge error is repeated only when it is an RFC 6750 code', () => {
  assert.equal(bearerError([{ scheme: 'bearer', params: { error: 'insufficient_scope' } }]), 'insufficient_scope');
  assert.equal(bearerError([{ scheme: 'bearer', params: { error: 'token=abc123 ADMIN' } }]), undefined);
  assert.equal(bearerError([]), undefined);
});

test('checkRealm is asked with the realm and whether credentials would go there; its refusal stops the request', async () => {
  const { http, calls } = fakeHttp(() => ({ status: 200, body: { token: 'T' } }));
  const asked: [string, string, boolean][] = [];
  const a = new Authorizer({
    credentials: creds({ [REG]: { auth: b64('alice:pw') } }),
    http,
    checkRealm: (registry, realm, withCredentials) => {
      asked.push([registry, realm.toString(), withCredentials]);
      return Promise.reject(new AgentError('PERMISSION_DENIED', 'no'));
    },
  });
  await assert.rejects(a.handleChallenge(REG, SCOPE, bearer, signal), (e: unknown) => e instanceof AgentError && e.message === 'no');
  assert.deepEqual(asked, [[REG, 'http://127.0.0.1:9/token', true]]);
  assert.equal(calls.length, 0);
});

test('Bearer: token server 5xx → UNAVAILABLE; no token in the answer → UNAVAILABLE', async () => {
  const a = new Authorizer({ credentials: creds({}), http: fakeHttp(() => ({ status: 503 })).http });
  await assert.rejects(a.handleChallenge(REG, SCOPE, bearer, signal), (e: unknown) => e instanceof AgentError && e.code === 'UNAVAILABLE');
  const b = new Authorizer({ credentials: creds({}), http: fakeHttp(() => ({ status: 200, body: {} })).http });
  await assert.rejects(b.handleChallenge(REG, SCOPE, bearer, signal), (e: unknown) => e instanceof AgentError && e.code === 'UNAVAILABLE');
});

test('Basic challenge: credentials → Basic header; none → PERMISSION_DENIED', async () => {
  const basic = [{ scheme: 'basic', params: { realm: 'r' } }];
  const { http, calls } = fakeHttp(() => ({ status: 500 }));
  const a = new Authorizer({ credentials: creds({ [`https://${REG}`]: { auth: b64('u:p') } }), http });
  await a.handleChallenge(REG, SCOPE, basic, signal);
  assert.equal(calls.length, 0, 'no token server involved');
  assert.equal(a.authorization(REG, SCOPE), `Basic ${b64('u:p')}`);
  const none = new Authorizer({ credentials: creds({}), http });
  await assert.rejects(
    none.handleChallenge(REG, SCOPE, basic, signal),
    (e: unknown) => e instanceof AgentError && e.code === 'PERMISSION_DENIED' && e.message.includes('no credentials'),
  );
});

test('401 without a usable challenge → PERMISSION_DENIED', async () => {
  const a = new Authorizer({ credentials: creds({}), http: fakeHttp(() => ({ status: 200 })).http });
  await assert.rejects(
    a.handleChallenge(REG, SCOPE, [], signal),
    (e: unknown) => e instanceof AgentError && e.code === 'PERMISSION_DENIED',
  );
  await assert.rejects(
    a.handleChallenge(REG, SCOPE, [{ scheme: 'negotiate', params: {} }], signal),
    (e: unknown) => e instanceof AgentError && e.message.includes('negotiate'),
  );
  await assert.rejects(
    a.handleChallenge(REG, SCOPE, [{ scheme: 'bearer', params: { realm: 'ftp://x' } }], signal),
    (e: unknown) => e instanceof AgentError && e.code === 'PERMISSION_DENIED' && e.message.includes('realm'),
  );
});

test('concurrent challenges for one scope share one token request', async () => {
  const { http, calls } = fakeHttp(() => ({ status: 200, body: { token: 'T' } }));
  const a = new Authorizer({ credentials: creds({}), http });
  await Promise.all([1, 2, 3].map(() => a.handleChallenge(REG, SCOPE, bearer, signal)));
  assert.equal(calls.length, 1);
});

/**
 * Host patterns of AGENT_ALLOWED_REGISTRIES and CONTAINER_REGISTRY_INSECURE, the local-address
 * classification used for redirects and token realms, and the LRU map behind the token cache.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { assertNotLocal, isLocalAddress } from '../../../src/registry/local-addresses.js';
import { LruMap } from '../../../src/registry/lru-map.js';
import {
  RegistryHosts,
  defaultRegistryHost,
  matchesHost,
  parseHostList,
  parseHostPattern,
  splitHost,
} from '../../../src/registry/registry-hosts.js';

test('exact patterns: a port must match; no port matches only the portless host; case-insensitive', () => {
  const p = parseHostList('Registry:5010, reg.example.com');
  assert.equal(matchesHost(p, 'registry:5010'), true);
  assert.equal(matchesHost(p, 'REGISTRY:5010'), true);
  assert.equal(matchesHost(p, 'registry:5011'), false);
  assert.equal(matchesHost(p, 'registry'), false);
  assert.equal(matchesHost(p, 'reg.example.com'), true);
  assert.equal(matchesHost(p, 'reg.example.com:443'), false);
  assert.equal(matchesHost(p, 'evil.reg.example.com'), false);
  assert.equal(matchesHost(p, '127.0.0.1:5010'), false);
});

test('suffix patterns match sub-domains only; * matches anything', () => {
  const p = parseHostList('*.example.com,*.corp:5000');
  assert.equal(matchesHost(p, 'a.example.com'), true);
  assert.equal(matchesHost(p, 'a.b.example.com'), true);
  assert.equal(matchesHost(p, 'example.com'), false);
  assert.equal(matchesHost(p, 'badexample.com'), false);
  assert.equal(matchesHost(p, 'r.corp:5000'), true);
  assert.equal(matchesHost(p, 'r.corp'), false);
  assert.equal(matchesHost(parseHostList('*'), '[::1]:5000'), true);
  assert.equal(matchesHost([], 'docker.io'), false);
});

test('docker.io, index.docker.io and registry-1.docker.io are one registry', () => {
  for (const listed of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
    const p = parseHostList(listed);
    for (const host of ['docker.io', 'index.docker.io', 'registry-1.docker.io'])
      assert.equal(matchesHost(p, host), true, `${listed} allows ${host}`);
    assert.equal(matchesHost(p, 'auth.docker.io'), false);
  }
});

test('IPv6 literals and bad patterns', () => {
  assert.equal(matchesHost(parseHostList('[::1]:5000'), '[::1]:5000'), true);
  assert.deepEqual(splitHost('[::1]:5000'), { hostname: '[::1]', port: '5000' });
  assert.deepEqual(splitHost('Host'), { hostname: 'host', port: undefined });
  for (const bad of ['http://reg', 'reg/path', 'reg:0', 'reg:70000', '*.', '*.[::1]', 'a b', '**'])
    assert.throws(() => parseHostPattern(bad), /expected|port/, bad);
  assert.deepEqual(parseHostList(' , a ,'), [{ kind: 'exact', hostname: 'a', port: undefined }]);
});

test('defaultRegistryHost: the host of CONTAINER_REGISTRY, docker.io when blank', () => {
  assert.equal(defaultRegistryHost('Registry:5010/esb/team'), 'registry:5010');
  assert.equal(defaultRegistryHost(''), 'docker.io');
});

test('RegistryHosts.assertAllowed: INVALID_ARGUMENT naming the registry and the variable', () => {
  const h = new RegistryHosts({ allowed: parseHostList('registry:5010'), insecure: [] });
  h.assertAllowed('registry:5010', 'registry:5010/esb/fn:v1');
  assert.throws(
    () => {
      h.assertAllowed('127.0.0.1:6379', '127.0.0.1:6379/x:v1');
    },
    (e: unknown) =>
      e instanceof AgentError && e.code === 'INVALID_ARGUMENT' && /127\.0\.0\.1:6379.*AGENT_ALLOWED_REGISTRIES/.test(e.message),
  );
  assert.equal(h.isInsecure('registry:5010'), false);
});

test("local addresses: loopback, link-local, unspecified, mapped IPv4 and the host's own; public ones are not", async () => {
  for (const ip of [
    '127.0.0.1',
    '127.9.9.9',
    '169.254.169.254',
    '0.0.0.0',
    '::1',
    '[::1]',
    'fe80::1',
    '::',
    '::ffff:127.0.0.1',
    '::ffff:169.254.169.254',
  ]) {
    assert.equal(isLocalAddress(ip), true, ip);
  }
  for (const ip of ['93.184.216.34', '2606:4700::1111', '8.8.8.8']) assert.equal(isLocalAddress(ip), false, ip);
  assert.equal(isLocalAddress('not-an-ip'), false);
  // Literals are checked without any lookup.
  await assert.rejects(
    assertNotLocal('127.0.0.1', 'redirect'),
    (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION',
  );
  await assert.rejects(assertNotLocal('[::1]', 'redirect'), (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION');
  await assertNotLocal('93.184.216.34', 'redirect');
  // `localhost` resolves (from /etc/hosts) to loopback.
  await assert.rejects(
    assertNotLocal('localhost', 'redirect'),
    (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION',
  );
});

test('LruMap keeps at most max entries, evicting the least recently used; prune drops stale ones', () => {
  const m = new LruMap<string, number>(2);
  m.set('a', 1);
  m.set('b', 2);
  assert.equal(m.get('a'), 1);
  m.set('c', 3);
  assert.equal(m.get('b'), undefined);
  assert.equal(m.get('a'), 1);
  assert.equal(m.size, 2);
  m.prune((v) => v === 3);
  assert.equal(m.get('c'), undefined);
  assert.equal(m.size, 1);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { defaultImageRef, parseReference, registryHostname } from '../../../src/registry/reference.js';

const D = 'sha256:' + 'a'.repeat(64);

const GOOD: [string, { registry: string; repository: string; tag?: string; digest?: string; name: string }][] = [
  ['busybox', { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', name: 'docker.io/library/busybox:latest' }],
  ['busybox:1.36', { registry: 'docker.io', repository: 'library/busybox', tag: '1.36', name: 'docker.io/library/busybox:1.36' }],
  ['library/busybox', { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', name: 'docker.io/library/busybox:latest' }],
  ['openfaas/faasd:v1', { registry: 'docker.io', repository: 'openfaas/faasd', tag: 'v1', name: 'docker.io/openfaas/faasd:v1' }],
  ['docker.io/busybox', { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', name: 'docker.io/library/busybox:latest' }],
  [
    'index.docker.io/busybox',
    { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', name: 'docker.io/library/busybox:latest' },
  ],
  [
    '127.0.0.1:5000/esb/fn:latest',
    { registry: '127.0.0.1:5000', repository: 'esb/fn', tag: 'latest', name: '127.0.0.1:5000/esb/fn:latest' },
  ],
  ['localhost/fn', { registry: 'localhost', repository: 'fn', tag: 'latest', name: 'localhost/fn:latest' }],
  ['localhost:5000/a/b/c:t', { registry: 'localhost:5000', repository: 'a/b/c', tag: 't', name: 'localhost:5000/a/b/c:t' }],
  ['registry:5010/my-fn', { registry: 'registry:5010', repository: 'my-fn', tag: 'latest', name: 'registry:5010/my-fn:latest' }],
  ['Registry.Example.COM/x', { registry: 'registry.example.com', repository: 'x', tag: 'latest', name: 'registry.example.com/x:latest' }],
  ['[::1]:5000/fn:v2', { registry: '[::1]:5000', repository: 'fn', tag: 'v2', name: '[::1]:5000/fn:v2' }],
  [`busybox@${D}`, { registry: 'docker.io', repository: 'library/busybox', digest: D, name: `docker.io/library/busybox@${D}` }],
  [`r.io/a:v1@${D}`, { registry: 'r.io', repository: 'a', tag: 'v1', digest: D, name: `r.io/a:v1@${D}` }],
  [
    'r.io/a_b/c__d/e-f--g.h:V1.0_x-y',
    { registry: 'r.io', repository: 'a_b/c__d/e-f--g.h', tag: 'V1.0_x-y', name: 'r.io/a_b/c__d/e-f--g.h:V1.0_x-y' },
  ],
];

for (const [input, want] of GOOD) {
  test(`parseReference(${JSON.stringify(input)}) → ${want.name}`, () => {
    const r = parseReference(input);
    assert.equal(r.registry, want.registry);
    assert.equal(r.repository, want.repository);
    assert.equal(r.tag, want.tag);
    assert.equal(r.digest, want.digest);
    assert.equal(r.name, want.name);
  });
}

const BAD: [string, RegExp][] = [
  ['', /empty/],
  ['bad ref', /white space/],
  ['Busybox', /lower-case/],
  ['r.io/Upper/x', /lower-case/],
  ['r.io/a:', /malformed tag/],
  ['r.io/a:-x', /malformed tag/],
  [`r.io/a:${'t'.repeat(129)}`, /malformed tag/],
  ['r.io/a@sha256:abc', /malformed digest/],
  [`r.io/a@sha512:${'a'.repeat(128)}`, /unsupported digest/],
  [`r.io/a@sha256:${'A'.repeat(64)}`, /unsupported digest/],
  ['a'.repeat(64), /image id/],
  ['r.io//a', /empty path component/],
  ['r.io/a/', /empty path component/],
  ['r.io/-a', /malformed path component/],
  ['r.io/a..b', /malformed path component/],
  ['-r.io/a', /malformed path component|malformed registry/],
  ['r_x.io:50/a', /malformed registry/],
  [':tag', /missing repository/],
  [`r.io/${'a'.repeat(260)}`, /longer than 255/],
];

for (const [input, why] of BAD) {
  test(`parseReference(${JSON.stringify(input.slice(0, 40))}) → INVALID_ARGUMENT`, () => {
    assert.throws(
      () => parseReference(input),
      (err: unknown) =>
        err instanceof AgentError &&
        err.code === 'INVALID_ARGUMENT' &&
        err.message.includes(JSON.stringify(input)) &&
        why.test(err.message),
    );
  });
}

test('defaultImageRef builds registry/safe(name):tag and omits a blank registry', () => {
  assert.equal(defaultImageRef('My_Func--1', 'registry:5010', 'latest'), 'registry:5010/my_func-1:latest');
  assert.equal(defaultImageRef('fn', 'registry:5010/esb/', 'v2'), 'registry:5010/esb/fn:v2');
  assert.equal(defaultImageRef('fn', '', 'latest'), 'fn:latest');
  assert.equal(parseReference(defaultImageRef('fn', '', 'latest')).name, 'docker.io/library/fn:latest');
  assert.throws(
    () => parseReference(defaultImageRef('***', 'r.io', 'latest')),
    (e: unknown) => e instanceof AgentError && e.code === 'INVALID_ARGUMENT',
  );
});

test('registryHostname drops the port (distribution-source label key)', () => {
  assert.equal(registryHostname('127.0.0.1:5099'), '127.0.0.1');
  assert.equal(registryHostname('docker.io'), 'docker.io');
  assert.equal(registryHostname('[::1]:5000'), '[::1]');
});

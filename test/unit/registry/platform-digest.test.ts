import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { DigestVerifier, chainIds, sha256Digest, verifyBytes } from '../../../src/registry/digest.js';
import type { Descriptor, ImageIndex } from '../../../src/registry/oci.js';
import { hostPlatform, normalizePlatform, platformMatches, selectManifest } from '../../../src/registry/platform.js';

const dg = (c: string): string => 'sha256:' + c.repeat(64);
const entry = (c: string, os: string, architecture: string, variant?: string): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: dg(c),
  size: 100,
  platform: { os, architecture, variant },
});

test('hostPlatform maps node arch names to OCI', () => {
  assert.deepEqual(hostPlatform('x64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(hostPlatform('arm64'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.equal(hostPlatform('ia32').architecture, '386');
});

test('normalizePlatform folds aliases and default variants', () => {
  assert.deepEqual(normalizePlatform({ os: 'Linux', architecture: 'x86_64' }), { os: 'linux', architecture: 'amd64', variant: undefined });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'aarch64' }), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'amd64', variant: 'v1' }), {
    os: 'linux',
    architecture: 'amd64',
    variant: undefined,
  });
  assert.ok(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }));
  assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64', variant: 'v3' }, { os: 'linux', architecture: 'amd64' }));
  assert.ok(!platformMatches({ os: 'windows', architecture: 'amd64' }, { os: 'linux', architecture: 'amd64' }));
});

test('selectManifest picks the host entry of an index', () => {
  const index: ImageIndex = {
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [entry('1', 'linux', 'arm64', 'v8'), entry('2', 'linux', 'amd64'), entry('3', 'windows', 'amd64')],
  };
  assert.equal(selectManifest(index, hostPlatform('x64'), 'r/x:1').digest, dg('2'));
  assert.equal(selectManifest(index, hostPlatform('arm64'), 'r/x:1').digest, dg('1'));
  // entries without platform (e.g. attestations) are never chosen
  const noPlat: ImageIndex = { mediaType: index.mediaType, manifests: [{ mediaType: 'x', digest: dg('4'), size: 1 }] };
  assert.throws(
    () => selectManifest(noPlat, hostPlatform('x64'), 'r/x:1'),
    (e: unknown) => e instanceof AgentError && e.code === 'NOT_FOUND',
  );
});

test('selectManifest with no match → NOT_FOUND "no manifest for linux/amd64 in <ref>"', () => {
  const index: ImageIndex = {
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [entry('1', 'linux', 'arm64', 'v8'), entry('5', 'linux', 's390x')],
  };
  assert.throws(
    () => selectManifest(index, hostPlatform('x64'), '127.0.0.1:5000/esb/fn:v1'),
    (e: unknown) =>
      e instanceof AgentError && e.code === 'NOT_FOUND' && e.message.startsWith('no manifest for linux/amd64 in 127.0.0.1:5000/esb/fn:v1'),
  );
});

test('chainIds: first = diffID, then sha256("<prev> <diffID>")', () => {
  const a = dg('a');
  const b = dg('b');
  const c = dg('c');
  const ab = 'sha256:' + createHash('sha256').update(`${a} ${b}`).digest('hex');
  const abc = 'sha256:' + createHash('sha256').update(`${ab} ${c}`).digest('hex');
  assert.deepEqual(chainIds([a]), [a]);
  assert.deepEqual(chainIds([a, b, c]), [a, ab, abc]);
  assert.deepEqual(chainIds([]), []);
});

test('DigestVerifier accepts the right bytes and rejects wrong digest, short or long bodies', () => {
  const data = Buffer.from('hello registry');
  const digest = sha256Digest(data);
  verifyBytes(data, digest, data.length, 'blob');
  const v = new DigestVerifier(digest, data.length, 'blob');
  v.update(data.subarray(0, 5));
  v.update(data.subarray(5));
  v.verify();
  assert.throws(
    () => {
      verifyBytes(Buffer.from('hello registrY'), digest, data.length, 'blob x');
    },
    (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION' && e.message.includes('digest mismatch'),
  );
  assert.throws(
    () => {
      verifyBytes(data.subarray(1), digest, data.length, 'blob x');
    },
    (e: unknown) => e instanceof AgentError && e.message.includes('got 13 bytes'),
  );
  const long = new DigestVerifier(digest, 3, 'blob y');
  assert.throws(
    () => {
      long.update(data);
    },
    (e: unknown) => e instanceof AgentError && e.message.includes('larger than the 3 bytes'),
  );
  assert.throws(
    () => new DigestVerifier('md5:abc', 1, 'blob z'),
    (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION',
  );
});

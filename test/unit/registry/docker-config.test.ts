import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { DockerCredentials, normalizeAuthKey } from '../../../src/registry/docker-config.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('normalizeAuthKey strips scheme and path, lower-cases', () => {
  assert.equal(normalizeAuthKey('https://index.docker.io/v1/'), 'index.docker.io');
  assert.equal(normalizeAuthKey('http://Registry:5010'), 'registry:5010');
  assert.equal(normalizeAuthKey('127.0.0.1:5000'), '127.0.0.1:5000');
  assert.equal(normalizeAuthKey('reg.example.com/v2/'), 'reg.example.com');
});

test('lookup finds credentials by host however the key is written', () => {
  const creds = DockerCredentials.parse(
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: b64('hub:hubpw') },
        'http://127.0.0.1:5000/v1/': { auth: b64('alice:pa:ss') },
        'registry:5010': { username: 'bob', password: 'pw' },
        'tok.example.com': { auth: b64('u:p'), identitytoken: 'refresh-1' },
        'empty.example.com': {},
      },
      credsStore: 'desktop',
    }),
    '/x/config.json',
  );
  assert.deepEqual(creds.lookup('docker.io'), { username: 'hub', password: 'hubpw', identityToken: undefined });
  // password keeps everything after the first ':'
  assert.deepEqual(creds.lookup('127.0.0.1:5000'), { username: 'alice', password: 'pa:ss', identityToken: undefined });
  assert.deepEqual(creds.lookup('registry:5010'), { username: 'bob', password: 'pw', identityToken: undefined });
  assert.equal(creds.lookup('tok.example.com')?.identityToken, 'refresh-1');
  assert.equal(creds.lookup('empty.example.com'), undefined);
  assert.equal(creds.lookup('127.0.0.1:5001'), undefined, 'the port is part of the key');
  assert.equal(creds.file, '/x/config.json');
});

test('malformed config.json or auth entry → FAILED_PRECONDITION naming DOCKER_CONFIG, not the path', () => {
  assert.throws(
    () => DockerCredentials.parse('{nope', '/c/config.json'),
    (e: unknown) =>
      e instanceof AgentError && e.code === 'FAILED_PRECONDITION' && e.message.includes('DOCKER_CONFIG') && !e.message.includes('/c/'),
  );
  assert.throws(
    () => DockerCredentials.parse(JSON.stringify({ auths: { r: { auth: b64('nocolon') } } }), '/c/config.json'),
    (e: unknown) => e instanceof AgentError && e.code === 'FAILED_PRECONDITION' && e.message.includes('user:password'),
  );
});

test('load: missing file = no credentials; present file is read', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-dockercfg-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const none = await DockerCredentials.load(path.join(dir, 'missing'));
  assert.equal(none.lookup('docker.io'), undefined);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { 'r.io': { auth: b64('a:b') } } }));
  const some = await DockerCredentials.load(dir);
  assert.deepEqual(some.lookup('r.io'), { username: 'a', password: 'b', identityToken: undefined });
});

/**
 * The docker worker's create body, image names, registry auth header and List mapping
 * (src/runtime/docker/create.ts, pull.ts, containers.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseReference } from '../../../src/registry/reference.js';
import { managedLabelFilters, workerFromSummary, type DockerContainerSummary } from '../../../src/runtime/docker/containers.js';
import { workerContainerBody } from '../../../src/runtime/docker/create.js';
import { cpuSharesForMemory as cpuSharesFor } from '../../../src/worker/limits.js';
import { dockerImageName, registryAuthHeader } from '../../../src/runtime/docker/pull.js';

const input = {
  id: 'esb-prod-fn-0a1b2c3d',
  image: '127.0.0.1:5000/esb-test/worker:v1',
  env: { A: '1', AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256' },
  memoryMb: 256,
  readonlyRootfs: true,
  tmpSizeMb: 512,
  network: 'esb-net',
  labels: {
    functionName: 'Fn',
    env: 'prod',
    ownerId: 'gw',
    createdAt: 1700000000,
    memoryMb: 256,
    image: '127.0.0.1:5000/esb-test/worker:v1',
  },
};

test('create body: limits, no-new-privileges, the network, request env, hostname', () => {
  const b = workerContainerBody(input) as {
    Env: string[];
    Hostname: string;
    HostConfig: Record<string, unknown>;
    NetworkingConfig: unknown;
    Image: string;
  };
  assert.equal(b.Image, input.image);
  assert.equal(b.Hostname, input.id);
  assert.deepEqual(b.Env, ['A=1', 'AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256']);
  const h = b.HostConfig;
  assert.equal(h['Memory'], 256 * 1024 * 1024);
  assert.equal(h['MemorySwap'], 256 * 1024 * 1024);
  assert.equal(h['PidsLimit'], 1024);
  assert.equal(h['CpuShares'], cpuSharesFor(256));
  assert.deepEqual(h['Ulimits'], [{ Name: 'nofile', Soft: 1024, Hard: 1024 }]);
  const secOpt = h['SecurityOpt'] as string[];
  assert.equal(secOpt[0], 'no-new-privileges');
  assert.ok(secOpt[1]?.startsWith('seccomp='), "the agent's own seccomp profile");
  const profile = JSON.parse(secOpt[1]!.slice('seccomp='.length)) as {
    defaultAction: string;
    syscalls: { names: string[]; action: string }[];
  };
  assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO');
  assert.ok(profile.syscalls.some((r) => r.names.includes('read')));
  assert.ok(!profile.syscalls.some((r) => r.action === 'SCMP_ACT_ALLOW' && r.names.includes('io_uring_setup')));
  assert.deepEqual(h['CapDrop'], ['NET_RAW']);
  assert.equal(h['ReadonlyRootfs'], true);
  assert.deepEqual(h['Tmpfs'], { '/tmp': 'nosuid,nodev,exec,mode=1777,size=512m' });
  assert.equal(h['NetworkMode'], 'esb-net');
  assert.deepEqual(b.NetworkingConfig, { EndpointsConfig: { 'esb-net': {} } });
});

test("cpu shares follow containerd's rule: 1024 at 1769 MiB, at least 2", () => {
  assert.equal(cpuSharesFor(1769), 1024);
  assert.equal(cpuSharesFor(128), Math.round((128 / 1769) * 1024));
  assert.equal(cpuSharesFor(16), 9);
});

test("labels: containerd's set without the IP and netns (dockerd owns those)", () => {
  const { Labels } = workerContainerBody(input) as { Labels: Record<string, string> };
  assert.deepEqual(Labels, {
    esb_function: 'Fn',
    created_by: 'esb-agent',
    esb_env: 'prod',
    'com.esb.kind': 'function',
    'com.esb.owner': 'gw',
    'com.esb.created_at': '1700000000',
    'com.esb.cni_network': 'esb-net',
    'com.esb.memory_mb': '256',
    'com.esb.image': '127.0.0.1:5000/esb-test/worker:v1',
  });
  assert.deepEqual(managedLabelFilters('prod'), { label: ['created_by=esb-agent', 'esb_env=prod', 'com.esb.kind=function'] });
});

test('image names for dockerd: tag, digest, docker.io normalisation', () => {
  assert.equal(dockerImageName(parseReference('busybox')), 'docker.io/library/busybox:latest');
  assert.equal(dockerImageName(parseReference('127.0.0.1:5000/a/b:v1')), '127.0.0.1:5000/a/b:v1');
  const d = `sha256:${'a'.repeat(64)}`;
  assert.equal(dockerImageName(parseReference(`127.0.0.1:5000/a/b:v1@${d}`)), `127.0.0.1:5000/a/b@${d}`);
});

test('X-Registry-Auth is base64url JSON of username/password/serveraddress, or the identity token', () => {
  const decode = (h: string): unknown => JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  const basic = registryAuthHeader('127.0.0.1:5000', { username: 'esb', password: 's3cret?>' });
  assert.ok(!/[+/=]/.test(basic), 'URL-safe, unpadded');
  assert.deepEqual(decode(basic), { username: 'esb', password: 's3cret?>', serveraddress: '127.0.0.1:5000' });
  assert.deepEqual(decode(registryAuthHeader('r.example', { username: 'u', password: '', identityToken: 'tok' })), {
    identitytoken: 'tok',
    serveraddress: 'r.example',
  });
});

test('List mapping from a recorded /containers/json: labels decide, state, IP of our network, exit code', () => {
  const list = JSON.parse(
    readFileSync(path.join(import.meta.dirname, '../../fixtures/docker/containers-list.json'), 'utf8'),
  ) as DockerContainerSummary[];
  const [paused, exited] = list;
  assert.ok(paused && exited);
  // As recorded: not labelled as ours (kind, owner, function missing) → never listed.
  assert.equal(workerFromSummary(exited, 'exp', 'esbexp', undefined), undefined);
  const labels = {
    created_by: 'esb-agent',
    esb_env: 'exp',
    'com.esb.kind': 'function',
    'com.esb.owner': 'gw',
    esb_function: 'fn',
    'com.esb.created_at': '1795604100',
  };
  const p = workerFromSummary({ ...paused, Labels: labels }, 'exp', 'esbexp', undefined);
  assert.equal(p?.id, 'esb-exp-fn-2');
  assert.equal(p.status, 'PAUSED');
  assert.equal(p.ipAddress, '10.253.77.2');
  assert.equal(p.createdAt, 1795604100);
  assert.equal(p.ownerId, 'gw');
  const e = workerFromSummary({ ...exited, Labels: labels }, 'exp', 'esbexp', {
    ...p,
    id: 'esb-exp-fn-12345678',
    ipAddress: '10.253.77.9',
    lastUsedAt: 1795604200,
    status: 'RUNNING',
  });
  assert.equal(e?.status, 'STOPPED');
  assert.equal(e.exitCode, 137);
  assert.equal(e.ipAddress, '10.253.77.9', 'a stopped container keeps the address it had');
  assert.equal(e.lastUsedAt, 1795604200);
  assert.equal(workerFromSummary({ ...exited, Labels: labels }, 'other-env', 'esbexp', undefined), undefined);
});
